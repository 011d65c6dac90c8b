package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/cmd/imagebuild"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
)

func newBuildCmd() *cobra.Command {
	var (
		all, controllerImage bool
		source               string
	)
	cmd := &cobra.Command{
		Use:   "build [PROMISE...]",
		Short: "Build a promise's stage images (or every built-in stage's, or the controller's) with Docker",
		Long: `Build compiles promised-stage from the source tree on this machine (static,
CGO_ENABLED=0), builds it into ` + imagebuild.StageBaseImage + `, and builds
one image per built-in stage the promise's pipelines name,
promised.dev/stage/<stage>:` + stage.Version + `, whose entrypoint is
/promised-stage <stage>. PROMISE is a promise folder, or a name looked up as
promises/NAME and examples/NAME. Images that are not built-in stages (such as
Kratix pipeline images) are listed and left alone.

A stage runs in its image only if its Go code is compiled into promised-stage:
register the promise's Stages() in cmd/builtin/builtin.go first.

Nothing is pulled: the images start FROM scratch. ` + "`make images`" + ` runs
` + "`promised build --all --controller`" + `.`,
		Example: `  promised build team
  promised build promises/natsuser
  promised build --all --controller`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !all && !controllerImage {
				return errors.New("name a promise, or use --all (every built-in stage) or --controller")
			}
			src := source
			if src == "" {
				src = "."
			}
			root, err := imagebuild.FindSource(src)
			if err != nil {
				return err
			}
			reg, err := builtin.Registry()
			if err != nil {
				return err
			}
			names, err := stagesToBuild(cmd, root, reg, args, all)
			if err != nil {
				return err
			}
			b := &imagebuild.Builder{Source: root, Log: cmd.ErrOrStderr()}
			if err := b.CheckDocker(cmd.Context()); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(names) > 0 {
				if err := b.StageBase(cmd.Context(), ""); err != nil {
					return err
				}
				if err := b.Stages(cmd.Context(), names); err != nil {
					return err
				}
				fmt.Fprintln(out, imagebuild.StageBaseImage)
				for _, n := range names {
					fmt.Fprintln(out, stage.Image(n))
				}
			}
			if controllerImage {
				if err := b.Controller(cmd.Context()); err != nil {
					return err
				}
				fmt.Fprintln(out, imagebuild.ControllerImage)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "build the image of every built-in stage (`promised stage list`)")
	f.BoolVar(&controllerImage, "controller", false, "also build the controller image "+imagebuild.ControllerImage)
	f.StringVar(&source, "source", "", "the promised source tree to build from (the one holding the current folder when empty)")
	return cmd
}

// stagesToBuild resolves the stages named by promises (and --all) and
// refuses stages the binary would not hold.
func stagesToBuild(cmd *cobra.Command, root string, reg *stage.Registry, promises []string, all bool) ([]string, error) {
	want := map[string]bool{}
	if all {
		for _, n := range reg.Names() {
			want[n] = true
		}
	}
	for _, arg := range promises {
		dir, err := promiseDir(root, arg)
		if err != nil {
			return nil, err
		}
		p, err := local.LoadPromise(dir)
		if err != nil {
			return nil, err
		}
		builtIn, other := imagebuild.PromiseStages(p)
		if missing := imagebuild.Unregistered(reg, builtIn); len(missing) > 0 {
			return nil, fmt.Errorf("promise %s names built-in stages that are not compiled into promised: %s (add the promise's Stages() to cmd/builtin/builtin.go)", p.Name, strings.Join(missing, ", "))
		}
		for _, img := range other {
			fmt.Fprintf(cmd.ErrOrStderr(), "promise %s: %s is not a built-in stage at %s; build it from its own Dockerfile\n", p.Name, img, stage.Version)
		}
		for _, n := range builtIn {
			want[n] = true
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// promiseDir finds a promise folder: arg itself, or promises/arg or
// examples/arg under the source root.
func promiseDir(root, arg string) (string, error) {
	candidates := []string{arg, filepath.Join(root, "promises", arg), filepath.Join(root, "examples", arg)}
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, local.PromiseFile)); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("no promise %q: looked for %s in %s", arg, local.PromiseFile, strings.Join(candidates, ", "))
}
