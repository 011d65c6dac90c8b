package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Folder is a ledger in a local directory, for `promised render` and other
// local runs: one 0600 JSON file per credential at
// <Dir>/<promise>/<namespace>/<name>/<credential>.json (namespace "_cluster"
// for cluster-scoped objects, a name no namespace can have). Files are
// written to a temporary file and renamed, so a crash leaves the old entry
// or the new one, never half of one.
//
// Owner UIDs are not part of the path: local runs have none, and a local
// request deleted and re-created is meant to keep its credentials. Compare-
// and-swap is exact within one process; across processes sharing the
// directory, creation is still exclusive (a hard link fails if the entry
// exists) but two concurrent updates may both succeed.
type Folder struct {
	dir string
	// mu serialises compare-and-swap within this process.
	mu sync.Mutex
}

// NewFolder returns a ledger in dir, creating it readable by this user
// only: the files hold credentials.
func NewFolder(dir string) (*Folder, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the ledger folder %s: %w", dir, err)
	}
	return &Folder{dir: dir}, nil
}

// Dir is the folder holding the entries.
func (f *Folder) Dir() string { return f.dir }

// folderRecord is an entry's file. Data is base64 in JSON; times are
// RFC 3339.
type folderRecord struct {
	Promise     string            `json:"promise"`
	APIVersion  string            `json:"apiVersion,omitempty"`
	Kind        string            `json:"kind,omitempty"`
	Namespace   string            `json:"namespace,omitempty"`
	Name        string            `json:"name"`
	UID         types.UID         `json:"uid,omitempty"`
	Credential  string            `json:"credential"`
	ID          string            `json:"id"`
	Data        map[string][]byte `json:"data,omitempty"`
	IssuedAt    time.Time         `json:"issuedAt,omitzero"`
	ExpiresAt   time.Time         `json:"expiresAt,omitzero"`
	Reason      Reason            `json:"reason,omitempty"`
	Meaning     string            `json:"meaning,omitempty"`
	RotateToken string            `json:"rotateToken,omitempty"`
	Used        bool              `json:"used,omitempty"`
	Retire      []string          `json:"retire,omitempty"`
}

func (f *Folder) ownerDir(o Owner) string {
	ns := o.Namespace
	if ns == "" {
		ns = "_cluster"
	}
	return filepath.Join(f.dir, o.Promise, ns, o.Name)
}

func (f *Folder) path(k Key) string {
	return filepath.Join(f.ownerDir(k.Owner), k.Credential+".json")
}

// Get implements Ledger.
func (f *Folder) Get(_ context.Context, key Key) (Entry, bool, error) {
	if err := checkKey(key); err != nil {
		return Entry{}, false, err
	}
	return f.read(key)
}

func (f *Folder) read(key Key) (Entry, bool, error) {
	data, err := os.ReadFile(f.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("reading the ledger entry for %s: %w", key, err)
	}
	var r folderRecord
	if err := json.Unmarshal(data, &r); err != nil {
		// json's syntax errors quote at most one character; the file's
		// path is named so the operator can remove it.
		return Entry{}, false, fmt.Errorf("ledger file %s is corrupt: %w", f.path(key), err)
	}
	return Entry{
		ID: r.ID, Data: r.Data, IssuedAt: r.IssuedAt, ExpiresAt: r.ExpiresAt, Reason: r.Reason,
		Meaning: r.Meaning, RotateToken: r.RotateToken, Used: r.Used, Retire: r.Retire,
		Revision: revisionOf(data),
	}, true, nil
}

func revisionOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12])
}

// Put implements Ledger.
func (f *Folder) Put(_ context.Context, key Key, e Entry) (Entry, error) {
	if err := checkKey(key); err != nil {
		return Entry{}, err
	}
	if err := checkEntry(e); err != nil {
		return Entry{}, err
	}
	o := key.Owner
	data, err := json.MarshalIndent(folderRecord{
		Promise: o.Promise, APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, UID: o.UID,
		Credential: key.Credential, ID: e.ID, Data: e.Data, IssuedAt: e.IssuedAt.UTC(), ExpiresAt: e.ExpiresAt.UTC(),
		Reason: e.Reason, Meaning: e.Meaning, RotateToken: e.RotateToken, Used: e.Used, Retire: e.Retire,
	}, "", "  ")
	if err != nil {
		return Entry{}, fmt.Errorf("recording %s: %w", key, err)
	}
	data = append(data, '\n')

	f.mu.Lock()
	defer f.mu.Unlock()
	if e.Revision != "" {
		cur, found, err := f.read(key)
		if err != nil {
			return Entry{}, err
		}
		if !found || cur.Revision != e.Revision {
			return Entry{}, fmt.Errorf("recording %s: %w", key, ErrConflict)
		}
	}
	if err := f.write(key, data, e.Revision == ""); err != nil {
		return Entry{}, err
	}
	e.Revision = revisionOf(data)
	return e, nil
}

// write puts data at key's path through a synced temporary file: renamed
// over the old entry to update, hard-linked to create (a link fails when
// the entry exists, which makes creation exclusive even across processes).
func (f *Folder) write(key Key, data []byte, create bool) error {
	final := f.path(key)
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("recording %s: %w", key, err)
	}
	tmp, err := os.CreateTemp(dir, "."+key.Credential+".tmp-*")
	if err != nil {
		return fmt.Errorf("recording %s: %w", key, err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600 already; Chmod guards against a umask
	// or platform that does otherwise.
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("recording %s: %w", key, err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("recording %s: %w", key, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("recording %s: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("recording %s: %w", key, err)
	}
	if create {
		if err := os.Link(tmp.Name(), final); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("recording %s: an entry exists: %w", key, ErrConflict)
			}
			return fmt.Errorf("recording %s: %w", key, err)
		}
	} else if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("recording %s: %w", key, err)
	}
	// The rename or link is only durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// Delete implements Ledger.
func (f *Folder) Delete(_ context.Context, key Key) error {
	if err := checkKey(key); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.Remove(f.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting the ledger entry for %s: %w", key, err)
	}
	return nil
}

// List implements Ledger.
func (f *Folder) List(_ context.Context, owner Owner) ([]Key, error) {
	if err := checkKey(Key{Owner: owner, Credential: "x"}); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(f.ownerDir(owner))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the ledger entries of %s/%s: %w", owner.Namespace, owner.Name, err)
	}
	var keys []Key
	for _, d := range ents {
		name, ok := strings.CutSuffix(d.Name(), ".json")
		// Temporary files end in a random suffix, never in .json.
		if !ok || !d.Type().IsRegular() {
			continue
		}
		keys = append(keys, Key{Owner: owner, Credential: name})
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Credential < keys[j].Credential })
	return keys, nil
}
