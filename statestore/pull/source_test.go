package pull_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/statestore"
	"promised.dev/promised/statestore/gittest"
	"promised.dev/promised/statestore/pull"
)

// store is a real Git server with a state store the test writes to
// through the statestore, as the controller does.
type store struct {
	t      *testing.T
	git    *gittest.Server
	repo   string
	writer *statestore.GitWriter
}

func newStore(t *testing.T) *store {
	t.Helper()
	s := &store{t: t, git: gittest.New(t), repo: "state.git"}
	s.git.InitBare(s.repo)
	w, err := statestore.NewGit(context.Background(), statestore.GitConfig{
		URL: s.git.HTTPURL(s.repo), Path: filepath.Join(t.TempDir(), "writer"),
		Basic: &statestore.BasicAuth{Username: s.git.Username(), Password: s.git.Password()},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	s.writer = w
	return s
}

// write places a request's output in dir, laid out as fp says.
func (s *store) write(dir string, fp statestore.Filepath, files map[string]string) string {
	s.t.Helper()
	c, err := statestore.OutputChange(dir, fp, bytesOf(files))
	require.NoError(s.t, err)
	res, err := s.writer.Write(context.Background(), c)
	require.NoError(s.t, err)
	return res.Commit
}

func (s *store) source(path string) *pull.GitSource {
	return &pull.GitSource{
		URL: s.git.HTTPURL(s.repo), Path: path,
		Basic: &statestore.BasicAuth{Username: s.git.Username(), Password: s.git.Password()},
	}
}

func TestSyncFromGitNestedByMetadata(t *testing.T) {
	w := newWorld(t)
	s := newStore(t)
	dir, err := statestore.ResourceDir("platform", "dev", "default", "widgets", "orders-"+w.id)
	require.NoError(t, err)
	s.write(dir, statestore.Filepath{}, map[string]string{
		"render/cm.yaml":  w.configMapYAML("orders", "1"),
		"render/NOTES.md": "for humans",
	})
	deps, err := statestore.DependenciesDir("platform", "dev", "widgets")
	require.NoError(t, err)
	commit := s.write(deps, statestore.Filepath{}, map[string]string{"dependencies.yaml": w.namespaceYAML() + "---\n" + w.configMapYAML("shared", "1")})

	src := s.source("platform/dev")
	src.CacheDir = t.TempDir()
	p := &pull.Puller{Source: src, Applier: w.applier()}
	rep, err := p.Once(context.Background())
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	require.Equal(t, commit, rep.Commit)
	require.Equal(t, "dependencies/widgets/dependencies.yaml#2", result(t, rep, w.cm("shared")).File)
	require.Equal(t, pull.ActionApplied, result(t, rep, w.cm("orders")).Action)
	require.Equal(t, []string{"skipped resources/default/widgets/orders-" + w.id + "/render/NOTES.md: not a .yaml or .yml file"}, rep.Notes)

	// The request goes: its folder leaves the store, and its objects the
	// cluster. The cached clone only fetches what is new.
	_, err = s.writer.Write(context.Background(), statestore.Change{Dir: dir, Delete: true})
	require.NoError(t, err)
	rep, err = p.Once(context.Background())
	require.NoError(t, err)
	require.Equal(t, map[string]pull.Action{
		"Namespace " + w.ns: pull.ActionUnchanged,
		w.cm("shared"):      pull.ActionUnchanged,
		w.cm("orders"):      pull.ActionPruned,
	}, actions(rep))
}

func TestSyncFromGitAggregatedYAML(t *testing.T) {
	w := newWorld(t)
	s := newStore(t)
	crd, _ := w.crdYAML()
	dir, err := statestore.ResourceDir("", "edge", "default", "gadgets", "g-"+w.id)
	require.NoError(t, err)
	// The CRD is in a file that sorts last, so it is aggregated after the
	// object that needs it.
	s.write(dir, statestore.Filepath{Mode: statestore.FilepathAggregatedYAML}, map[string]string{
		"a/gadget.yaml": w.gadgetYAML("g", 1),
		"b/ns.yaml":     w.namespaceYAML(),
		"z/crd.yaml":    crd,
	})
	snap, err := s.source("edge").Fetch(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.Files, 1, "aggregatedYAML: one file per request")

	rep, err := w.applier().Sync(context.Background(), snap.Files)
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	file := "resources/default/gadgets/g-" + w.id + "/" + statestore.DefaultAggregatedFilename
	require.Equal(t, []pull.ObjectResult{
		{Object: pull.ObjectRef{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "gadgets." + w.id + ".pull.test.promised.dev"}, File: file + "#3", Action: pull.ActionApplied},
		{Object: pull.ObjectRef{APIVersion: "v1", Kind: "Namespace", Name: w.ns}, File: file + "#2", Action: pull.ActionApplied},
		{Object: pull.ObjectRef{APIVersion: w.id + ".pull.test.promised.dev/v1", Kind: "Gadget", Namespace: w.ns, Name: "g"}, File: file + "#1", Action: pull.ActionApplied},
	}, rep.Objects)
}

func TestGitSourceErrors(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// No branch yet: an error, never an empty folder to prune from.
	_, err := s.source("dev").Fetch(ctx)
	require.ErrorContains(t, err, `has no branch "main"`)

	s.write("dev/resources/default/p/r", statestore.Filepath{}, map[string]string{"cm.yaml": "kind: ConfigMap\n"})
	src := s.source("dev")
	src.Basic = &statestore.BasicAuth{Username: s.git.Username(), Password: "wrong-password-123"}
	_, err = src.Fetch(ctx)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "wrong-password-123")

	// Credentials in the URL work, and stay out of messages.
	src = s.source("dev")
	src.Basic = nil
	src.URL = strings.Replace(s.git.HTTPURL(s.repo), "http://", "http://"+s.git.Username()+":"+s.git.Password()+"@", 1)
	snap, err := src.Fetch(ctx)
	require.NoError(t, err)
	require.Contains(t, snap.Files, "resources/default/p/r/cm.yaml")
	require.NotContains(t, pull.RedactURL(src.URL), s.git.Password())

	// A folder that does not exist reads as empty (what Git shows for a
	// destination with nothing placed on it).
	snap, err = s.source("other").Fetch(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Files)
}

func TestPullerRunKeepsPulling(t *testing.T) {
	w := newWorld(t)
	s := newStore(t)
	s.write("dev/resources/default/p/a", statestore.Filepath{}, map[string]string{"ns.yaml": w.namespaceYAML(), "cm.yaml": w.configMapYAML("a", "1")})
	src := s.source("dev")
	src.CacheDir = t.TempDir()
	p := &pull.Puller{Source: src, Applier: w.applier()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reports := make(chan pull.Report, 100)
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, 100*time.Millisecond, func(r pull.Report, err error) {
			if err == nil {
				reports <- r
			}
		})
	}()
	first := <-reports
	require.Equal(t, pull.ActionApplied, result(t, first, w.cm("a")).Action)
	commit := s.write("dev/resources/default/p/b", statestore.Filepath{}, map[string]string{"cm.yaml": w.configMapYAML("b", "1")})
	require.Eventually(t, func() bool {
		select {
		case r := <-reports:
			return r.Commit == commit && r.Count(pull.ActionApplied) == 1
		default:
			return false
		}
	}, 20*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
