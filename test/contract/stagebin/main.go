// Command stagebin runs the built-in stages and the contract probe by
// name; the contract tests build it for the exec and Docker runners.
package main

import (
	"context"
	"fmt"
	"os"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/contract/probe"
)

func main() {
	reg, err := builtin.Registry()
	if err == nil {
		err = reg.Register(probe.Name, probe.Stage)
	}
	if err == nil {
		err = run(reg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stagebin:", err)
		os.Exit(1)
	}
}

func run(reg *stage.Registry) error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: stagebin NAME")
	}
	f, ok := reg.ByName(os.Args[1])
	if !ok {
		return fmt.Errorf("no stage %q", os.Args[1])
	}
	return stage.RunProcess(context.Background(), f)
}
