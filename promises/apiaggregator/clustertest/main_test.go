// Package clustertest runs the ApiAggregator promises on a real
// kube-apiserver with the real Gateway API CRDs (standard channel) and the
// real controller in-process: the apiserver judges both the requests
// (the promises' schemas and CEL rules) and every rendered object (Gateway
// API's schemas and CEL rules), and the controller places and writes the
// output to a Git server.
package clustertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/apiaggregator"
	"promised.dev/promised/test/controlplane"
	"promised.dev/promised/test/harness"
)

// k8s is a client of the control plane every test of the package shares;
// a control plane costs seconds to start, so it is started once, as
// envtest intends.
var k8s client.Client

// The promises' CRDs are cluster-wide, so one pair of promises serves every
// test. The aggregator promise selects this label, which only the
// end-to-end test's destinations carry.
const testDestinationLabel = "apiaggregator-test"

// Paths from this package to the promise folders and promised's own CRDs.
const (
	aggregatorDir = "../aggregator"
	targetDir     = "../target"
	promisedCRDs  = "../../../config/crd"
)

func TestMain(m *testing.M) {
	gatewayCRDs, err := gatewayAPIStandardCRDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	reg := stage.NewRegistry()
	for name, f := range apiaggregator.Stages() {
		if err := reg.Register(name, f); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
	}
	var platform *harness.Platform
	// The controller must stop before the control plane does, or its
	// watches hold the apiserver's shutdown: stop it right after the tests.
	run := runFunc(func() int {
		defer platform.Stop()
		return m.Run()
	})
	os.Exit(controlplane.RunTests(run, controlplane.Options{
		CRDDirectoryPaths:     []string{promisedCRDs, gatewayCRDs},
		ErrorIfCRDPathMissing: true,
	}, func(cp *controlplane.ControlPlane) error {
		p, err := harness.Start(cp, reg)
		if err != nil {
			return err
		}
		platform, k8s = p, p.Client
		if err := installPromises(context.Background()); err != nil {
			// No test runs, so run() never stops the controller.
			p.Stop()
			return err
		}
		return nil
	}))
}

type runFunc func() int

func (r runFunc) Run() int { return r() }

// gatewayAPIStandardCRDs locates the standard-channel CRDs of the Gateway
// API module this repository requires, in the module cache, so that the
// CRDs always match the Go types the unit tests decode with.
func gatewayAPIStandardCRDs() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return "", fmt.Errorf("locating the sigs.k8s.io/gateway-api module (go list -m): %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("the Gateway API standard CRDs: %w (run go mod download sigs.k8s.io/gateway-api)", err)
	}
	return dir, nil
}

// installPromises creates both promises as shipped, except that the
// aggregator promise selects the test's destinations, and waits until they
// serve their kinds.
func installPromises(ctx context.Context) error {
	for _, dir := range []string{aggregatorDir, targetDir} {
		p, err := local.LoadPromise(dir)
		if err != nil {
			return err
		}
		if dir == aggregatorDir {
			p.Spec.DestinationSelectors = []v1alpha1.DestinationSelector{{MatchLabels: map[string]string{testDestinationLabel: "true"}}}
		}
		if err := k8s.Create(ctx, p); err != nil {
			return fmt.Errorf("creating promise %s: %w", p.Name, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range []string{"apiaggregator", "apiaggregatortarget"} {
		for {
			p := &v1alpha1.Promise{}
			err := k8s.Get(ctx, types.NamespacedName{Name: name}, p)
			if err == nil && ready(p.Status.Conditions) && p.Status.ObservedGeneration == p.Generation {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("promise %s never became Ready (last error %v, conditions %+v)", name, err, p.Status.Conditions)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func ready(conds []metav1.Condition) bool {
	for _, c := range conds {
		if c.Type == "Ready" {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
