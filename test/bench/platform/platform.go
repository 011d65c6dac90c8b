package main

import (
	"context"

	"promised.dev/promised/test/liveplatform"
)

// platform is the live platform and what the benchmark adds to it.
type platform struct {
	*liveplatform.Platform
}

// startPlatform starts the platform (see liveplatform) with the
// controller's pprof endpoints on.
func startPlatform(ctx context.Context, o options) (*platform, error) {
	lp, err := liveplatform.Start(ctx, liveplatform.Options{
		Root: o.root, WorkPrefix: "promised-bench-", Promised: o.promisedBin, ControllerArgs: o.controllerArgs, Pprof: true,
	})
	if err != nil {
		return nil, err
	}
	return &platform{Platform: lp}, nil
}

// close stops the platform, keeping its work folder when asked to.
func (p *platform) close(keep bool) {
	if keep {
		progress("keeping %s", p.Work)
		p.CloseKeeping()
		return
	}
	p.Close()
}
