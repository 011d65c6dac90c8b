// Command promised-stage is the entrypoint of every built-in stage image:
// `promised-stage NAME` runs the stage NAME against the contract's folders
// (/kratix in a container, $PROMISED_KRATIX_ROOT elsewhere).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/stage"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "promised-stage:", err)
		os.Exit(1)
	}
}

func run() error {
	reg, err := builtin.Registry()
	if err != nil {
		return err
	}
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: promised-stage NAME (one of %v)", reg.Names())
	}
	f, ok := reg.ByName(os.Args[1])
	if !ok {
		return fmt.Errorf("no stage %q in this binary (stages: %v)", os.Args[1], reg.Names())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return stage.RunProcess(ctx, f)
}
