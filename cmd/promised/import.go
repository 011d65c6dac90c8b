package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"promised.dev/promised/pipelines/kratix"
)

func newImportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert promises written for other orchestrators",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newImportKratixCmd())
	return cmd
}

func newImportKratixCmd() *cobra.Command {
	var (
		output string
		strict bool
	)
	cmd := &cobra.Command{
		Use:   "kratix FILE",
		Short: "Convert a Kratix Promise (platform.kratix.io) and print promised's",
		Long: `Import kratix reads a Kratix Promise (FILE, or - for standard input) and
prints the same Promise in promised's API group, platform.promised.dev. The
API, dependencies, destination selectors, required promises and workflows
carry over, pipeline images included: they run unchanged, since promised keeps
Kratix's pipeline container contract. Fields promised has no place for are
dropped, each reported as a warning on standard error and in a comment at the
top of the output, with what to do instead.`,
		Example: `  promised import kratix postgres/promise.yaml > promises/postgres/promise.yaml
  kubectl get promise postgresql -o yaml | promised import kratix - --strict`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				data []byte
				err  error
			)
			if args[0] == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return fmt.Errorf("reading the Kratix promise: %w", err)
			}
			res, err := kratix.Convert(data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			errOut := cmd.ErrOrStderr()
			for _, n := range res.Notes {
				fmt.Fprintln(errOut, "note:", n)
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(errOut, "warning:", w)
			}
			if strict && len(res.Warnings) > 0 {
				return fmt.Errorf("%d field(s) cannot be carried over (--strict)", len(res.Warnings))
			}
			if output == "" {
				_, err = cmd.OutOrStdout().Write(res.YAML)
				return err
			}
			if _, err := os.Stat(output); err == nil {
				return errors.New(output + " exists: promised import does not overwrite files")
			}
			if err := os.WriteFile(output, res.YAML, 0o644); err != nil {
				return fmt.Errorf("writing %s: %w", output, err)
			}
			fmt.Fprintf(errOut, "wrote %s\n", output)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the promise to this file instead of standard output")
	cmd.Flags().BoolVar(&strict, "strict", false, "fail when any field cannot be carried over")
	return cmd
}
