package pull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"

	"promised.dev/promised/statestore"
)

// Snapshot is a destination's folder at one revision.
type Snapshot struct {
	// Commit is the revision read, when the source has one.
	Commit string
	// Files maps paths relative to the folder to their content.
	Files map[string][]byte
}

// Source reads a destination's folder.
type Source interface {
	Fetch(ctx context.Context) (Snapshot, error)
}

// GitSource reads one folder of a Git state store, with the statestore's
// Git code used read-only: it opens the clone (fetching the branch), reads
// the folder at the fetched commit, and closes it without writing.
type GitSource struct {
	// URL of the repository. Credentials embedded in an http(s) URL work
	// but, like Basic's, never appear in errors or logs.
	URL string
	// Branch to read; "main" when empty.
	Branch string
	// Path is the destination's folder in the repository:
	// <store path>/<destination path>.
	Path string
	// Basic authenticates over http(s).
	Basic *statestore.BasicAuth
	// CABundle is extra PEM certificates to trust for https.
	CABundle []byte
	// CacheDir keeps the clone between fetches so each one downloads only
	// what is new; the clone goes in a subfolder per URL and branch. When
	// empty, every Fetch clones into a temporary folder and removes it.
	CacheDir string
	// AttemptTimeout bounds the fetch; 2 minutes when zero.
	AttemptTimeout time.Duration
	// Logger receives the Git code's logs.
	Logger logr.Logger
}

// Fetch implements Source. A branch that does not exist is an error, not
// an empty folder: pruning everything because of a typo in a branch name
// would be the worst possible reading of it.
func (g *GitSource) Fetch(ctx context.Context) (Snapshot, error) {
	if g.Path == "" {
		return Snapshot{}, errors.New("git source: Path (the destination's folder) is required")
	}
	branch := g.Branch
	if branch == "" {
		branch = "main"
	}
	dir, cleanup, err := g.cloneDir(branch)
	if err != nil {
		return Snapshot{}, err
	}
	defer cleanup()
	w, err := statestore.NewGit(ctx, statestore.GitConfig{
		URL: g.URL, Branch: branch, Path: dir,
		Basic: g.Basic, CABundle: g.CABundle,
		ProbeID:        "sync",
		AttemptTimeout: g.AttemptTimeout,
		Logger:         g.Logger,
	})
	if err != nil {
		// The statestore's errors name the (redacted) URL already.
		return Snapshot{}, err
	}
	defer func() { _ = w.Close() }()
	head, err := w.Head()
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading the head of %s branch %s: %w", RedactURL(g.URL), branch, err)
	}
	if head == "" {
		return Snapshot{}, fmt.Errorf("%s has no branch %q", RedactURL(g.URL), branch)
	}
	files, err := w.Read(ctx, g.Path)
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading folder %s of %s: %w", g.Path, RedactURL(g.URL), err)
	}
	return Snapshot{Commit: head, Files: files}, nil
}

// cloneDir picks the clone's folder. A folder per URL and branch, because
// the statestore refuses (rightly) to reuse a clone for another remote.
func (g *GitSource) cloneDir(branch string) (string, func(), error) {
	if g.CacheDir == "" {
		dir, err := os.MkdirTemp("", "promised-sync-")
		if err != nil {
			return "", nil, fmt.Errorf("creating a folder for the clone: %w", err)
		}
		return dir, func() { _ = os.RemoveAll(dir) }, nil
	}
	sum := sha256.Sum256([]byte(RedactURL(g.URL) + "\x00" + branch))
	dir := filepath.Join(g.CacheDir, hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(g.CacheDir, 0o700); err != nil {
		return "", nil, fmt.Errorf("creating the clone cache %s: %w", g.CacheDir, err)
	}
	return dir, func() {}, nil
}

// RedactURL hides the password of a URL with embedded credentials, for
// messages.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// StoreSource reads a folder through a statestore.Writer the caller
// already holds (the in-process controller's writer under `promised up`,
// or a DirWriter), so no second clone is made.
type StoreSource struct {
	Store statestore.Writer
	// Path is the destination's folder: <store path>/<destination path>.
	Path string
}

// Fetch implements Source. The commit is known when the writer can tell
// its head (GitWriter can).
func (s StoreSource) Fetch(ctx context.Context) (Snapshot, error) {
	files, err := s.Store.Read(ctx, s.Path)
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading folder %s: %w", s.Path, err)
	}
	snap := Snapshot{Files: files}
	if h, ok := s.Store.(interface{ Head() (string, error) }); ok {
		if snap.Commit, err = h.Head(); err != nil {
			return Snapshot{}, fmt.Errorf("reading the state store's head: %w", err)
		}
	}
	return snap, nil
}

// Puller fetches a destination's folder and syncs it.
type Puller struct {
	Source  Source
	Applier *Applier
}

// Once fetches and syncs one time. The report carries the commit applied.
func (p *Puller) Once(ctx context.Context) (Report, error) {
	snap, err := p.Source.Fetch(ctx)
	if err != nil {
		return Report{Destination: p.Applier.Destination()}, fmt.Errorf("destination %s: %w", p.Applier.Destination(), err)
	}
	rep, err := p.Applier.Sync(ctx, snap.Files)
	rep.Commit = snap.Commit
	return rep, err
}

// Run syncs at once and then every interval until ctx ends, handing each
// outcome to report (which may be nil). A failed sync does not stop it:
// the next one may succeed. It returns nil when ctx ends.
func (p *Puller) Run(ctx context.Context, interval time.Duration, report func(Report, error)) error {
	if interval <= 0 {
		return errors.New("pull: Run needs a positive interval")
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := p.Once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if report != nil {
			report(rep, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
