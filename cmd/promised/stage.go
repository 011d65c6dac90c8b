package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/stage"
)

func newStageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "stage", Short: "Run or list the built-in pipeline stages"}
	cmd.AddCommand(&cobra.Command{
		Use:   "run NAME",
		Short: "Run one built-in stage against the contract's folders ($PROMISED_KRATIX_ROOT or /kratix)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := builtin.Registry()
			if err != nil {
				return err
			}
			f, ok := reg.ByName(args[0])
			if !ok {
				return fmt.Errorf("no built-in stage %q (stages: %v)", args[0], reg.Names())
			}
			return stage.RunProcess(cmd.Context(), f)
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List the built-in stages and their images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg, err := builtin.Registry()
			if err != nil {
				return err
			}
			for _, n := range reg.Names() {
				fmt.Fprintln(cmd.OutOrStdout(), stage.Image(n))
			}
			return nil
		},
	})
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of promised and its built-in stages",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "promised", stage.Version)
		},
	}
}
