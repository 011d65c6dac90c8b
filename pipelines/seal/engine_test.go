package seal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
)

// generate is a stage that writes what a typical earlier container of a
// pipeline writes: a file mixing a Secret (with the password from the
// request) and other objects, and a file without Secrets.
func generate(_ context.Context, c *stage.Context) error {
	spec, err := c.Spec()
	if err != nil {
		return err
	}
	password, _ := spec["password"].(string)
	obj, err := c.Object()
	if err != nil {
		return err
	}
	ns := obj.GetNamespace()
	app := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: %[1]s
data:
  url: nats://nats:4222
---
apiVersion: v1
kind: Secret
metadata:
  name: nats-creds
  namespace: %[1]s
stringData:
  user: api
  password: %[2]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: %[1]s
`, ns, password)
	if err := c.WriteFile("app/resources.yaml", []byte(app)); err != nil {
		return err
	}
	return c.WriteFile("app/service.yaml", []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: "+ns+"\n"))
}

func sealEngine(t testing.TB) *pipelines.Engine {
	t.Helper()
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register("generate", generate))
	require.NoError(t, reg.Register(seal.StageName, seal.Stage))
	seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
		return pipelines.InProcess{Registry: reg}, nil
	}}
	return &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}
}

func sealWorkflow(t testing.TB, k sealingKey, scope seal.Scope, password string) pipelines.Workflow {
	t.Helper()
	inputs, err := seal.Inputs(k.certPEM, scope, fpKey)
	require.NoError(t, err)
	return pipelines.Workflow{
		PromiseName: "nats", Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: []v1alpha1.Pipeline{{
			Metadata: v1alpha1.PipelineMetadata{Name: "configure"},
			Spec: v1alpha1.PipelineSpec{Containers: []v1alpha1.Container{
				{Name: "generate", Image: stage.Image("generate")},
				{Name: "seal", Image: stage.Image(seal.StageName)},
			}},
		}},
		Object: &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "example.promised.dev/v1", "kind": "NatsAccount",
			"metadata": map[string]any{"name": "api", "namespace": "payments"},
			"spec":     map[string]any{"password": password},
		}},
		Inputs: inputs,
	}
}

// TestRerunsThroughTheEngineAreByteIdentical is the product's promise:
// re-running a pipeline with unchanged inputs changes nothing, and each
// deliberate change (certificate, scope, plaintext) changes the output
// exactly once.
func TestRerunsThroughTheEngineAreByteIdentical(t *testing.T) {
	k, other := keys(t)
	e := sealEngine(t)
	runs := 1000
	if testing.Short() {
		runs = 50
	}

	var previous map[string][]byte
	// run re-runs w n times, each with the last run's output as previous,
	// and returns how many distinct outputs it saw that differ from the
	// output before it started.
	run := func(w pipelines.Workflow, n int) int {
		t.Helper()
		before := previous
		distinct := 0
		for i := range n {
			w.Previous = previous
			res, err := e.Run(context.Background(), w)
			require.NoError(t, err, "run %d", i)
			out := res.Files()
			if i > 0 {
				require.Equal(t, previous, out, "run %d of an unchanged input changed the output", i)
			} else if !equalFiles(before, out) {
				distinct++
			}
			previous = out
		}
		return distinct
	}

	require.Equal(t, 1, run(sealWorkflow(t, k, "", "s3cret"), runs))
	out := previous
	require.NotContains(t, string(out["configure/app/resources.yaml"]), "s3cret")
	require.Contains(t, string(out["configure/app/resources.yaml"]), "kind: SealedSecret")

	require.Equal(t, 1, run(sealWorkflow(t, other, "", "s3cret"), 20), "a new certificate re-seals once")
	require.Equal(t, 1, run(sealWorkflow(t, other, seal.ScopeNamespaceWide, "s3cret"), 20), "a new scope re-seals once")
	require.Equal(t, 1, run(sealWorkflow(t, other, seal.ScopeNamespaceWide, "n3w-s3cret"), 20), "a new password re-seals once")
	require.Equal(t, 0, run(sealWorkflow(t, other, seal.ScopeNamespaceWide, "n3w-s3cret"), 20))

	// Only the SealedSecret document ever changed: the other documents
	// and the file without a Secret kept their bytes throughout.
	require.Equal(t, out["configure/app/service.yaml"], previous["configure/app/service.yaml"])
	require.True(t, bytes.HasPrefix(previous["configure/app/resources.yaml"], out["configure/app/resources.yaml"][:bytes.Index(out["configure/app/resources.yaml"], []byte("---"))]))
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func TestStageWithoutCertificateFailsWithoutLeaking(t *testing.T) {
	k, _ := keys(t)
	w := sealWorkflow(t, k, "", "hunter2")
	w.Inputs = nil
	_, err := sealEngine(t).Run(context.Background(), w)
	require.Error(t, err)
	require.True(t, errors.Is(err, seal.ErrNoCertificate), "%v", err)
	require.Contains(t, err.Error(), `container "seal"`)
	require.NotContains(t, err.Error(), "hunter2")
}

func TestStageWithoutSecretsNeedsNoInputs(t *testing.T) {
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register(seal.StageName, seal.Stage))
	require.NoError(t, reg.Register("cm", func(_ context.Context, c *stage.Context) error {
		return c.WriteFile("cm.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"))
	}))
	seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
		return pipelines.InProcess{Registry: reg}, nil
	}}
	e := &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}
	res, err := e.Run(context.Background(), pipelines.Workflow{
		PromiseName: "team", Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: []v1alpha1.Pipeline{{Metadata: v1alpha1.PipelineMetadata{Name: "p"}, Spec: v1alpha1.PipelineSpec{Containers: []v1alpha1.Container{
			{Name: "cm", Image: stage.Image("cm")}, {Name: "seal", Image: stage.Image(seal.StageName)},
		}}}},
		Object: &unstructured.Unstructured{Object: map[string]any{"apiVersion": "x/v1", "kind": "T", "metadata": map[string]any{"name": "a", "namespace": "d"}}},
	})
	require.NoError(t, err)
	require.Equal(t, map[string][]byte{"p/cm.yaml": []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")}, res.Files())
}

// natsUser is the stage the NATS team needed: it obtains a user's
// password from the ledger (minting a random one only when the policy says
// so) and writes it as a plaintext Secret for the seal stage.
func natsUser(ctx context.Context, c *stage.Context) error {
	l, err := c.Ledger()
	if err != nil {
		return err
	}
	obj, err := c.Object()
	if err != nil {
		return err
	}
	key := ledger.Key{Owner: ledger.OwnerFromObject(c.Env.PromiseName, obj), Credential: "nats"}
	p := ledger.Policy{TTL: 90 * 24 * time.Hour, RotateBefore: 14 * 24 * time.Hour, RotateRequest: ledger.RotateRequest(obj)}
	got, err := ledger.Obtain(ctx, l, key, p, time.Now(), func(context.Context) (ledger.Entry, error) {
		pw := make([]byte, 24)
		if _, err := rand.Read(pw); err != nil {
			return ledger.Entry{}, err
		}
		return ledger.Entry{Data: map[string][]byte{"password": []byte(base64.RawURLEncoding.EncodeToString(pw))}}, nil
	})
	if err != nil {
		return err
	}
	// A real stage provisions the user in NATS here, then settles.
	if err := ledger.Settle(ctx, l, key, got.Entry.ID); err != nil {
		return err
	}
	secret := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: nats-user\n  namespace: %s\nstringData:\n  user: %s\n  password: %s\n",
		obj.GetNamespace(), got.Entry.ID, got.Entry.Data["password"])
	if err := c.WriteFile("nats/user.yaml", []byte(secret)); err != nil {
		return err
	}
	return c.SetStatus(map[string]any{"credentials": []ledger.CredentialStatus{got.Status()}})
}

// TestMintedCredentialIsStableUntilRotated is the NATS team's story end to
// end: a periodic reconcile re-runs a pipeline that mints a credential and
// seals it. With the ledger and the guard, re-runs change nothing; the
// rotate annotation changes the output exactly once.
func TestMintedCredentialIsStableUntilRotated(t *testing.T) {
	k, _ := keys(t)
	l, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register("nats-user", natsUser))
	require.NoError(t, reg.Register(seal.StageName, seal.Stage))
	seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
		return pipelines.InProcess{Registry: reg, Ledger: l}, nil
	}}
	e := &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}
	w := sealWorkflow(t, k, "", "")
	w.Pipelines[0].Spec.Containers = []v1alpha1.Container{
		{Name: "nats-user", Image: stage.Image("nats-user")},
		{Name: "seal", Image: stage.Image(seal.StageName)},
	}
	w.Object.SetUID("9f1c")

	var outputs [][]byte
	run := func(n int) {
		for range n {
			res, err := e.Run(context.Background(), w)
			require.NoError(t, err)
			entry, _, err := l.Get(context.Background(), ledger.Key{Owner: ledger.OwnerFromObject("nats", w.Object), Credential: "nats"})
			require.NoError(t, err)
			password := string(entry.Data["password"])
			require.NotContains(t, fmt.Sprint(res.Status), password)
			for _, data := range res.Files() {
				require.NotContains(t, string(data), password)
			}
			w.Previous = res.Files()
			out := w.Previous["configure/nats/user.yaml"]
			if len(outputs) == 0 || !bytes.Equal(outputs[len(outputs)-1], out) {
				outputs = append(outputs, out)
			}
		}
	}
	run(50)
	require.Len(t, outputs, 1, "50 reconciles, one output")
	w.Object.SetAnnotations(map[string]string{ledger.RotateAnnotation: "2026-03-01T10:00:00Z"})
	run(50)
	require.Len(t, outputs, 2, "the rotate annotation changes the output once")
}
