package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"promised.dev/promised/pipelines/local"
)

func newTestCmd() *cobra.Command {
	var (
		ef     engineFlags
		update bool
	)
	cmd := &cobra.Command{
		Use:   "test PROMISE_DIR...",
		Short: "Run every case under a promise's testdata/ and show a diff on mismatch",
		Long: `Test runs each folder under PROMISE_DIR/testdata as a case: the request in
request.yaml goes through the promise's workflow and the result must equal the
expected/ folder (or the error must contain error.txt). With --update the
expected/ folders are rewritten from what the runs produce.`,
		Example: `  promised test examples/team
  promised test promises/*`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := ef.options()
			if err != nil {
				return err
			}
			failed := 0
			out := cmd.OutOrStdout()
			for _, dir := range args {
				results, err := local.RunCases(cmd.Context(), opts, dir, update)
				if err != nil {
					return err
				}
				for _, r := range results {
					if r.Passed() {
						fmt.Fprintf(out, "ok    %s/%s\n", dir, r.Name)
						continue
					}
					failed++
					fmt.Fprintf(out, "FAIL  %s/%s\n%s\n", dir, r.Name, r.Diff)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d test case(s) failed", failed)
			}
			return nil
		},
	}
	ef.add(cmd)
	cmd.Flags().BoolVar(&update, "update", false, "rewrite each case's expected/ folder from this run")
	return cmd
}
