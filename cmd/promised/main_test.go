package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/controlplane"
	"promised.dev/promised/test/harness"
)

// One control plane serves every test of the package, with the
// controller running in-process (test/harness) so that `get` shows what
// the controller really writes, and `sync` applies what it really
// committed. The same cluster is the platform and, for sync, the
// destination. Tests keep apart by names of their own.
var (
	k8s        client.Client
	kubeconfig string
)

var updateGolden = flag.Bool("update", false, "rewrite golden files from the output")

func TestMain(m *testing.M) {
	reg := stage.NewRegistry()
	if err := reg.Register("cm", cmStage); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "promised-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var p *harness.Platform
	code := controlplane.RunTests(testRunner(func() int {
		defer p.Stop()
		return m.Run()
	}), controlplane.Options{CRDDirectoryPaths: []string{"../../config/crd"}, ErrorIfCRDPathMissing: true}, func(cp *controlplane.ControlPlane) error {
		kubeconfig = filepath.Join(dir, "kubeconfig")
		if err := cp.WriteKubeconfig(kubeconfig); err != nil {
			return err
		}
		if p, err = harness.Start(cp, reg); err != nil {
			return err
		}
		k8s = p.Client
		return nil
	})
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type testRunner func() int

func (r testRunner) Run() int { return r() }

// cmStage writes a ConfigMap named after the request holding spec.value,
// or fails when spec.fail is set.
func cmStage(_ context.Context, c *stage.Context) error {
	spec, err := c.Spec()
	if err != nil {
		return err
	}
	if spec["fail"] == true {
		return errors.New("the stage was asked to fail")
	}
	cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": c.Env.ObjectName, "namespace": c.Env.ObjectNamespace},
		"data":     map[string]any{"value": fmt.Sprint(spec["value"])}}
	return c.WriteObjects("cm.yaml", cm)
}

// runCLI executes the promised CLI in-process and returns its stdout and
// stderr.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// assertGolden compares got with testdata/name, or rewrites it with -update.
func assertGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run the test with -update to create it")
	require.Equal(t, string(want), string(got))
}
