package stage

import (
	"context"
	"fmt"
	"os"

	"promised.dev/promised/pipelines/contract"
)

// RunProcess runs f as the stage of this process: the workspace and
// environment come from the process environment, as in a container or a
// subprocess started by the exec runner.
func RunProcess(ctx context.Context, f Func) error {
	ws := contract.CurrentWorkspace(os.Getenv)
	c, err := NewContext(ws, os.Getenv)
	if err != nil {
		return fmt.Errorf("reading the pipeline contract: %w", err)
	}
	return Run(ctx, f, c)
}

// Run calls f, turning a panic in stage code into an error so that one bad
// stage cannot take the controller down with it.
func Run(ctx context.Context, f Func, c *Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("stage panicked: %v", r)
		}
	}()
	return f(ctx, c)
}
