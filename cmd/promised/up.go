package main

import (
	"time"

	"github.com/spf13/cobra"

	"promised.dev/promised/cmd/up"
)

func newUpCmd() *cobra.Command {
	opts := up.Options{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole platform on this machine",
		Long: `Up starts a platform control plane with the controller and every promise of
promises/ installed, a Git state store served over HTTP, and two workload
control planes (dev and prod) that pull their folders from it. Everything
lives under --state-dir; a second up reuses it. Ctrl-C stops everything.`,
		Example: `  promised up --with-examples
  promised up --with-examples --exit-when-ready`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out = cmd.OutOrStdout()
			return up.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.StateDir, "state-dir", ".state", "folder holding the platform's state")
	f.StringVar(&opts.Root, "root", ".", "the repository checkout holding promises/ and examples/")
	f.BoolVar(&opts.WithExamples, "with-examples", false, "apply the example requests of examples/requests")
	f.BoolVar(&opts.ExitWhenReady, "exit-when-ready", false, "print a summary and exit once every request is Ready and applied")
	f.DurationVar(&opts.ReadyTimeout, "ready-timeout", 5*time.Minute, "how long --exit-when-ready waits")
	f.BoolVarP(&opts.Verbose, "verbose", "v", false, "print the controller's logs")
	return cmd
}
