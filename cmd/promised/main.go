// Command promised is the platform orchestrator's CLI: it renders and tests
// promises locally and (in later subcommands) runs the controller and the
// local platform.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "promised",
		Short:         "promised: a promise-based platform orchestrator",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRenderCmd(), newTestCmd(), newStageCmd(), newControllerCmd(), newUpCmd(), newVersionCmd(), newSyncCmd(), newGetCmd(), newDestinationCmd(), newInitCmd(), newBuildCmd(), newImportCmd())
	return root
}
