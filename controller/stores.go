package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/statestore"
)

// Stores keeps one state-store writer per GitStateStore, so every reconcile
// writing to a store joins the same queue and their writes share commits.
// A writer is rebuilt when the store's spec or its Secret changes.
type Stores struct {
	// Client reads GitStateStores.
	Client client.Reader
	// Secrets reads their credentials; an uncached reader, so the
	// controller does not watch every Secret of the cluster.
	Secrets client.Reader
	// Dir holds each writer's bare clone.
	Dir string
	// Logger is given to each writer.
	Logger logr.Logger
	// CommitInterval is given to each writer (GitConfig.CommitInterval).
	CommitInterval time.Duration

	// SecretRecheck is how long a store's Secret is trusted unchanged
	// before Get reads it again; DefaultSecretRecheck when zero. Every
	// reconcile asks for its store's writer, and reading the Secret each
	// time (it is deliberately not cached) made that one or two apiserver
	// reads per reconcile, the only reads an unchanged re-run made. A
	// changed GitStateStore is seen at once; a changed Secret within this
	// time, or at once after a write to the store failed.
	SecretRecheck time.Duration

	mu      sync.Mutex
	writers map[string]*storeEntry
}

// DefaultSecretRecheck is Stores.SecretRecheck's default, and how long
// sealing certificates are remembered.
const DefaultSecretRecheck = 10 * time.Second

type storeEntry struct {
	version string
	writer  statestore.Writer
	path    string
	// storeVersion is the GitStateStore's resourceVersion when version
	// was computed, and checked when its Secret was last read.
	storeVersion string
	checked      time.Time
}

// Store is a writer and the folder inside it where destinations live.
type Store struct {
	Writer statestore.Writer
	// Path is the GitStateStore's spec.path.
	Path string
}

// Get returns the writer of the named GitStateStore.
func (s *Stores) Get(ctx context.Context, name string) (Store, error) {
	gss := &v1alpha1.GitStateStore{}
	if err := s.Client.Get(ctx, types.NamespacedName{Name: name}, gss); err != nil {
		return Store{}, fmt.Errorf("reading GitStateStore %q: %w", name, err)
	}
	if st, ok := s.fresh(name, gss.ResourceVersion); ok {
		return st, nil
	}
	cfg, version, err := s.config(ctx, gss)
	if err != nil {
		return Store{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writers == nil {
		s.writers = map[string]*storeEntry{}
	}
	if e, ok := s.writers[name]; ok && e.version == version {
		e.storeVersion, e.checked = gss.ResourceVersion, time.Now()
		return Store{Writer: e.writer, Path: e.path}, nil
	} else if ok {
		// Close drains the old writer's queue; its callers still get their
		// results.
		go func() { _ = e.writer.Close() }()
	}
	w, err := statestore.NewGit(ctx, cfg)
	if err != nil {
		return Store{}, fmt.Errorf("opening GitStateStore %q: %w", name, err)
	}
	s.writers[name] = &storeEntry{version: version, writer: w, path: gss.Spec.Path, storeVersion: gss.ResourceVersion, checked: time.Now()}
	return Store{Writer: w, Path: gss.Spec.Path}, nil
}

// fresh returns the writer of store name when the GitStateStore is the
// one it was built for and its Secret was read recently.
func (s *Stores) fresh(name, storeVersion string) (Store, bool) {
	recheck := s.SecretRecheck
	if recheck == 0 {
		recheck = DefaultSecretRecheck
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.writers[name]
	if !ok || e.storeVersion != storeVersion || time.Since(e.checked) >= recheck {
		return Store{}, false
	}
	return Store{Writer: e.writer, Path: e.path}, true
}

// Recheck makes the next Get of store name read its Secret again: after a
// failed write, the credentials may be what changed.
func (s *Stores) Recheck(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.writers[name]; ok {
		e.checked = time.Time{}
	}
}

// config builds the writer's configuration and a version string that
// changes whenever anything in it does.
func (s *Stores) config(ctx context.Context, gss *v1alpha1.GitStateStore) (statestore.GitConfig, string, error) {
	cfg := statestore.GitConfig{
		URL:            gss.Spec.URL,
		Branch:         gss.Spec.Branch,
		AuthorName:     gss.Spec.GitAuthor.Name,
		AuthorEmail:    gss.Spec.GitAuthor.Email,
		Logger:         s.Logger.WithValues("gitStateStore", gss.Name),
		ProbeID:        "controller",
		CommitInterval: s.CommitInterval,
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00", gss.Spec.URL, gss.Spec.Branch, gss.Spec.AuthMethod, gss.Spec.GitAuthor.Name, gss.Spec.GitAuthor.Email)
	if ref := gss.Spec.SecretRef; ref != nil {
		sec := &corev1.Secret{}
		if err := s.Secrets.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, sec); err != nil {
			return cfg, "", fmt.Errorf("reading Secret %s/%s of GitStateStore %q: %w", ref.Namespace, ref.Name, gss.Name, err)
		}
		fmt.Fprintf(h, "%s\x00", sec.ResourceVersion)
		switch gss.Spec.AuthMethod {
		case v1alpha1.AuthSSH:
			key, hosts := sec.Data["sshPrivateKey"], sec.Data["knownHosts"]
			if len(key) == 0 || len(hosts) == 0 {
				return cfg, "", fmt.Errorf("Secret %s/%s of GitStateStore %q: ssh auth needs keys sshPrivateKey and knownHosts", ref.Namespace, ref.Name, gss.Name)
			}
			cfg.SSH = &statestore.SSHAuth{PrivateKey: key, KnownHosts: hosts}
		default:
			user, pass := sec.Data["username"], sec.Data["password"]
			if len(pass) == 0 {
				return cfg, "", fmt.Errorf("Secret %s/%s of GitStateStore %q: basicAuth needs keys username and password", ref.Namespace, ref.Name, gss.Name)
			}
			cfg.Basic = &statestore.BasicAuth{Username: string(user), Password: string(pass)}
		}
	}
	version := hex.EncodeToString(h.Sum(nil))[:16]
	// One clone per store and configuration: a changed URL must not reuse
	// a clone of another repository.
	cfg.Path = filepath.Join(s.Dir, gss.Name+"-"+version)
	return cfg, version, nil
}

// Close closes every writer, waiting for queued writes.
func (s *Stores) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for name, e := range s.writers {
		if err := e.writer.Close(); err != nil && first == nil {
			first = fmt.Errorf("closing GitStateStore %q: %w", name, err)
		}
	}
	s.writers = nil
	return first
}
