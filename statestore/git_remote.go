package statestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// The remote side speaks the Git protocol through go-git's transport layer
// directly rather than Remote.Push and Remote.Fetch: we already know the
// exact objects to send (see packWriter), the push must be a
// compare-and-swap against the commit the batch was built on (see
// GitWriter.attempt), and a fetch must not hold the clone's lock while it
// downloads.

// fetch brings the clone's branch to the remote's, downloading what is
// missing, and returns the new head (ZeroHash when the remote has no such
// branch).
func (w *GitWriter) fetch(ctx context.Context) (plumbing.Hash, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.AttemptTimeout)
	defer cancel()
	rm := w.remote
	sess, err := w.tp.NewUploadPackSession(rm.endpoint(), rm.auth)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("connecting to %s: %w", rm.display, rm.red.err(err))
	}
	defer sess.Close()
	var target plumbing.Hash
	ar, err := sess.AdvertisedReferencesContext(ctx)
	switch {
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		// No branch yet: the first write creates it.
	case err != nil:
		return plumbing.ZeroHash, fmt.Errorf("listing refs of %s: %w", rm.display, rm.red.err(err))
	default:
		target = ar.References[w.ref.String()]
	}

	w.mu.Lock()
	head, err := w.local.head()
	have := err == nil && (target.IsZero() || w.local.has(target))
	w.mu.Unlock()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if !have {
		if err := w.download(ctx, sess, ar, target, head); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// The remote is the truth: if its branch is gone, so is ours.
	if err := w.local.setHead(target); err != nil {
		return plumbing.ZeroHash, err
	}
	if target != head {
		w.log.V(1).Info("fetched", "from", head.String(), "to", target.String())
	}
	return target, nil
}

// download fetches the objects of target that are not in the clone. The
// pack is spooled to a file first so that the clone's lock is not held
// while bytes trickle in from the network.
func (w *GitWriter) download(ctx context.Context, sess transport.UploadPackSession, ar *packp.AdvRefs, target, have plumbing.Hash) error {
	rm := w.remote
	req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
	// A thin pack may hold deltas against objects outside it, which
	// go-git's pack index writer cannot resolve.
	req.Capabilities.Delete(capability.ThinPack)
	if ar.Capabilities.Supports(capability.NoProgress) {
		_ = req.Capabilities.Set(capability.NoProgress)
	}
	req.Wants = []plumbing.Hash{target}
	if !have.IsZero() {
		req.Haves = []plumbing.Hash{have}
	}
	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return fmt.Errorf("fetching %s from %s: %w", target, rm.display, rm.red.err(err))
	}
	defer resp.Close()
	var rd io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		rd = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		rd = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	tmp, err := os.CreateTemp(w.cfg.Path, fetchTempPrefix+"*")
	if err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, rd); err != nil {
		return fmt.Errorf("fetching %s from %s: %w", target, rm.display, rm.red.err(err))
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.local.addPack(tmp); err != nil {
		return err
	}
	if !w.local.has(target) {
		return fmt.Errorf("fetching %s from %s: the pack received does not contain it", target, rm.display)
	}
	return nil
}

const fetchTempPrefix = "promised-fetch-"
