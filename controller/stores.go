package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"

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

	mu      sync.Mutex
	writers map[string]*storeEntry
}

type storeEntry struct {
	version string
	writer  statestore.Writer
	path    string
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
	s.writers[name] = &storeEntry{version: version, writer: w, path: gss.Spec.Path}
	return Store{Writer: w, Path: gss.Spec.Path}, nil
}

// config builds the writer's configuration and a version string that
// changes whenever anything in it does.
func (s *Stores) config(ctx context.Context, gss *v1alpha1.GitStateStore) (statestore.GitConfig, string, error) {
	cfg := statestore.GitConfig{
		URL:         gss.Spec.URL,
		Branch:      gss.Spec.Branch,
		AuthorName:  gss.Spec.GitAuthor.Name,
		AuthorEmail: gss.Spec.GitAuthor.Email,
		Logger:      s.Logger.WithValues("gitStateStore", gss.Name),
		ProbeID:     "controller",
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
