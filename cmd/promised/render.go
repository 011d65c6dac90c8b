package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
)

type engineFlags struct {
	runtime string
}

func (f *engineFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.runtime, "runtime", string(local.RuntimeAuto),
		"how containers run: auto (built-in stages in-process, other images with docker), inprocess, exec or docker")
}

func (f *engineFlags) options() (local.Options, error) {
	reg, err := builtin.Registry()
	if err != nil {
		return local.Options{}, err
	}
	return local.Options{Registry: reg, Runtime: local.Runtime(f.runtime)}, nil
}

func newRenderCmd() *cobra.Command {
	var (
		ef                  engineFlags
		workflow, typ       string
		output, previousDir string
		objectsDir          string
		ledgerDir           string
	)
	cmd := &cobra.Command{
		Use:   "render PROMISE [REQUEST]",
		Short: "Run a promise's workflow locally and print what the controller would write",
		Long: `Render runs one workflow of a promise on this machine, with no cluster, and
prints every output file, where it would be placed and the status the request
would get. PROMISE is a promise folder (holding promise.yaml) or a YAML file;
REQUEST is a request file (not needed with --type promise).`,
		Example: `  promised render examples/team examples/team/testdata/basic/request.yaml
  promised render examples/team request.yaml --workflow delete
  promised render examples/team --type promise
  promised render examples/team request.yaml --output out/`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := local.LoadPromise(args[0])
			if err != nil {
				return err
			}
			req := local.Request{Promise: p, Type: contract.WorkflowType(typ), Action: contract.Action(workflow)}
			if req.Type == contract.TypeResource {
				if len(args) < 2 {
					return fmt.Errorf("a resource workflow needs a REQUEST file")
				}
				if req.Object, err = local.LoadObject(args[1]); err != nil {
					return err
				}
			}
			if previousDir != "" {
				if req.Previous, err = local.ReadSnapshot(previousDir); err != nil {
					return err
				}
			}
			opts, err := ef.options()
			if err != nil {
				return err
			}
			if objectsDir != "" {
				fo, err := local.LoadFolderObjects(objectsDir)
				if err != nil {
					return err
				}
				opts.Objects, opts.Secrets = fo, fo
			}
			if ledgerDir == "" {
				// Without a ledger folder, credentials are minted afresh
				// in a temporary one, as on a request's first run.
				tmp, err := os.MkdirTemp("", "promised-render-ledger-")
				if err != nil {
					return fmt.Errorf("creating a ledger folder: %w", err)
				}
				defer os.RemoveAll(tmp)
				ledgerDir = filepath.Join(tmp, "ledger")
			}
			if opts.Ledger, err = ledger.NewFolder(ledgerDir); err != nil {
				return err
			}
			e, err := local.NewEngine(opts)
			if err != nil {
				return err
			}
			res, err := local.Render(cmd.Context(), e, req)
			if err != nil {
				return err
			}
			snap, err := local.Snapshot(p, res)
			if err != nil {
				return err
			}
			if output != "" {
				if err := local.WriteSnapshot(output, snap); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %d files to %s\n", len(snap), output)
				return nil
			}
			return printSnapshot(cmd.OutOrStdout(), snap)
		},
	}
	ef.add(cmd)
	cmd.Flags().StringVar(&workflow, "workflow", string(contract.ActionConfigure), "the workflow to run: configure or delete")
	cmd.Flags().StringVar(&typ, "type", string(contract.TypeResource), "resource (a request's workflow) or promise (the promise's own)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the files to this folder instead of printing them")
	cmd.Flags().StringVar(&previousDir, "previous", "", "a folder holding the previous output (as --output wrote it)")
	cmd.Flags().StringVar(&ledgerDir, "ledger", "", "a folder of 0600 files keeping the credentials stages mint, so a second render reuses them (a temporary one when empty)")
	cmd.Flags().StringVar(&objectsDir, "objects", "", "a folder of YAML files: other requests and platform configuration Secrets that stages may read")
	return cmd
}

// printSnapshot prints output files first, then placement and status.
func printSnapshot(w io.Writer, snap map[string][]byte) error {
	var last []string
	for _, name := range local.SortedNames(snap) {
		if name == local.SnapshotStatus || name == local.SnapshotDestinations {
			last = append(last, name)
			continue
		}
		if _, err := fmt.Fprintf(w, "# %s\n%s", name, withNewline(snap[name])); err != nil {
			return err
		}
	}
	for _, name := range last {
		if _, err := fmt.Fprintf(w, "# %s\n%s", name, withNewline(snap[name])); err != nil {
			return err
		}
	}
	return nil
}

func withNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(b, '\n')
	}
	return b
}
