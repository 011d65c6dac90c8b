// Command stagebin runs the jobtest stage; the Job runner's tests build it
// into the image stage.Image(jobtest.Name). `stagebin evil-writer HOW`
// runs jobtest.EvilWriter instead, for images that replace the Job's
// writer.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"promised.dev/promised/pipelines/job/internal/jobtest"
	"promised.dev/promised/pipelines/stage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) == 3 && os.Args[1] == "evil-writer" {
		err = jobtest.EvilWriter(ctx, os.Args[2])
	} else {
		err = stage.RunProcess(ctx, jobtest.Stage)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jobtest:", err)
		os.Exit(1)
	}
}
