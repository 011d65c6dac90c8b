package statestore

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResourceDir(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name                              string
		store, dest, ns, promise, request string
		want                              string
		field                             string // field named in the error, "" when valid
	}{
		{name: "plain", dest: "dev", ns: "team-a", promise: "postgres", request: "db-1", want: "dev/resources/team-a/postgres/db-1"},
		{name: "store path", store: "platform/state", dest: "Dev_1", ns: "default", promise: "nats.example.com", request: "a.b", want: "platform/state/Dev_1/resources/default/nats.example.com/a.b"},
		{name: "nested destination path", dest: "eu/prod-1", ns: "x", promise: "p", request: "r", want: "eu/prod-1/resources/x/p/r"},
		{name: "dotdot request", dest: "dev", ns: "ns", promise: "p", request: "..", field: "request"},
		{name: "slash in request", dest: "dev", ns: "ns", promise: "p", request: "a/b", field: "request"},
		{name: "empty request", dest: "dev", ns: "ns", promise: "p", request: "", field: "request"},
		{name: "upper case request", dest: "dev", ns: "ns", promise: "p", request: "DB", field: "request"},
		{name: "namespace with dot", dest: "dev", ns: "a.b", promise: "p", request: "r", field: "namespace"},
		{name: "namespace too long", dest: "dev", ns: long, promise: "p", request: "r", field: "namespace"},
		{name: "dotdot namespace", dest: "dev", ns: "..", promise: "p", request: "r", field: "namespace"},
		{name: "promise leading dash", dest: "dev", ns: "ns", promise: "-p", request: "r", field: "promise"},
		{name: "promise double dot", dest: "dev", ns: "ns", promise: "a..b", request: "r", field: "promise"},
		{name: "empty destination", dest: "", ns: "ns", promise: "p", request: "r", field: "destination path"},
		{name: "dotdot destination", dest: "../x", ns: "ns", promise: "p", request: "r", field: "destination path"},
		{name: "hidden destination", dest: ".git", ns: "ns", promise: "p", request: "r", field: "destination path"},
		{name: "absolute store", store: "/srv", dest: "dev", ns: "ns", promise: "p", request: "r", field: "store path"},
		{name: "trailing slash store", store: "a/", dest: "dev", ns: "ns", promise: "p", request: "r", field: "store path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResourceDir(tc.store, tc.dest, tc.ns, tc.promise, tc.request)
			if tc.field == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			var pe *PathError
			require.True(t, errors.As(err, &pe), "want a PathError, got %v", err)
			assert.Equal(t, tc.field, pe.Field)
			assert.Contains(t, err.Error(), "invalid "+tc.field)
			assert.Contains(t, err.Error(), "must")
		})
	}
}

func TestDependenciesDir(t *testing.T) {
	got, err := DependenciesDir("state", "dev", "postgres")
	require.NoError(t, err)
	assert.Equal(t, "state/dev/dependencies/postgres", got)
	_, err = DependenciesDir("", "dev", "../x")
	require.ErrorContains(t, err, `invalid promise "../x": must be a DNS-1123 subdomain`)
}

func TestOutputChange(t *testing.T) {
	files := map[string][]byte{
		"z.yaml":     []byte("kind: Z\n"),
		"a/b.yml":    []byte("kind: B1\n---\n\n---\nkind: B2\n\n"),
		"c.yaml":     []byte(""),
		"d.yaml":     []byte("--- \nkind: D\n...\n"),
		"e/f/g.yaml": []byte("# only a comment\nkind: G\n"),
	}
	for _, tc := range []struct {
		name  string
		fp    Filepath
		files map[string][]byte
		want  map[string][]byte
		err   string
	}{
		{name: "default is nested", files: files, want: files},
		{name: "nested", fp: Filepath{Mode: FilepathNestedByMetadata}, files: files, want: files},
		{name: "aggregated default filename", fp: Filepath{Mode: FilepathAggregatedYAML}, files: files, want: map[string][]byte{
			"aggregated.yaml": []byte("kind: B1\n---\nkind: B2\n---\nkind: D\n---\n# only a comment\nkind: G\n---\nkind: Z\n"),
		}},
		{name: "aggregated filename", fp: Filepath{Mode: FilepathAggregatedYAML, Filename: "out/all.yaml"}, files: map[string][]byte{"x.yaml": []byte("a: 1")}, want: map[string][]byte{
			"out/all.yaml": []byte("a: 1\n"),
		}},
		{name: "aggregated nothing", fp: Filepath{Mode: FilepathAggregatedYAML}, files: map[string][]byte{"x.yaml": []byte("---\n")}, want: nil},
		{name: "aggregated refuses non-yaml", fp: Filepath{Mode: FilepathAggregatedYAML}, files: map[string][]byte{"x.json": []byte("{}")}, err: `"x.json" is not a .yaml`},
		{name: "aggregated bad filename", fp: Filepath{Mode: FilepathAggregatedYAML, Filename: "../x.yaml"}, files: files, err: `".." segment`},
		{name: "unknown mode", fp: Filepath{Mode: "flat"}, files: files, err: `unknown filepath mode "flat"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := OutputChange("dev/resources/ns/p/r", tc.fp, tc.files)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "dev/resources/ns/p/r", c.Dir)
			assert.Equal(t, tc.want, c.Files)
		})
	}
}
