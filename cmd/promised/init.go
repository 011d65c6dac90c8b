package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"promised.dev/promised/pipelines/scaffold"
)

func newInitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Scaffold new platform code (a promise)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newInitPromiseCmd())
	return cmd
}

func newInitPromiseCmd() *cobra.Command {
	var o scaffold.Options
	cmd := &cobra.Command{
		Use:   "promise NAME --group GROUP --kind KIND",
		Short: "Scaffold a promise folder that builds and passes its own test",
		Long: `Init promise writes promises/NAME (or --dir): promise.yaml with an API of one
field, a Go stage (package NAME without dashes) rendering the ytt templates it
embeds, one template, a test case testdata/basic whose expected output is made
by running that stage, a Dockerfile for the stage's image and a README with
the next steps. ` + "`promised test`" + ` passes on it once its Stages() is
registered in cmd/builtin.`,
		Example: `  promised init promise redis --group marketplace.example.com --kind Redis
  promised init promise s3-bucket --group storage.example.com --kind Bucket --dir promises/bucket --plural buckets`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			dir, files, err := scaffold.Generate(cmd.Context(), o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, f := range files {
				fmt.Fprintln(out, "created", f)
			}
			fmt.Fprintf(out, "\nNext: register the stage in cmd/builtin/builtin.go, then run `promised test %s`; %s/README.md lists the rest.\n", dir, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Group, "group", "", "API group of the promise's kind, such as marketplace.example.com (required)")
	f.StringVar(&o.Kind, "kind", "", "the kind developers request, such as Redis (required)")
	f.StringVar(&o.Version, "version", scaffold.DefaultVersion, "API version of the kind")
	f.StringVar(&o.Plural, "plural", "", "plural resource name of the kind (lowercased kind + \"s\" when empty)")
	f.StringVar(&o.Dir, "dir", "", "folder to create (promises/NAME when empty)")
	f.BoolVar(&o.Force, "force", false, "write into a folder that already holds files, replacing the scaffold's files")
	_ = cmd.MarkFlagRequired("group")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}
