package controller_test

import (
	"os"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/harness"
)

// One control plane and one controller serve every test of the package,
// started once here as envtest intends; tests keep apart by giving their
// promises, destinations and stores names and labels of their own.
var k8s client.Client

func TestMain(m *testing.M) {
	reg := stage.NewRegistry()
	for name, f := range testStages {
		if err := reg.Register(name, f); err != nil {
			panic(err)
		}
	}
	os.Exit(harness.TestMain(m, "../config/crd", reg, func(p *harness.Platform) { k8s = p.Client }))
}
