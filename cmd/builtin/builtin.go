// Package builtin lists the stages compiled into promised's binaries: the
// shared stages and every shipped promise's own.
package builtin

import (
	"promised.dev/promised/examples/team"
	"promised.dev/promised/pipelines/job"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/apiaggregator"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/natsuser"
)

// Registry returns a registry holding every built-in stage.
func Registry() (*stage.Registry, error) {
	r := stage.NewRegistry()
	stages := map[string]stage.Func{
		team.StageName: team.Render,
		seal.StageName: seal.Stage,
		// The Job runner's reader and writer: the first and last
		// containers of every pipeline Job.
		job.ReaderStageName: job.ReaderStage,
		job.WriterStageName: job.WriterStage,
	}
	for _, promise := range []map[string]stage.Func{database.Stages(), apiaggregator.Stages(), natsuser.Stages()} {
		for name, f := range promise {
			stages[name] = f
		}
	}
	for name, f := range stages {
		if err := r.Register(name, f); err != nil {
			return nil, err
		}
	}
	return r, nil
}
