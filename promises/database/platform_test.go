package database_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/seal/sealtest"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/promises/database/pgtest"
)

// The shared server's platform Secret, as promise.yaml names it.
const (
	serverSecretNamespace = "promised-system"
	serverSecretName      = "postgres-shared"
)

// Key generation takes a good fraction of a second; the tests share one
// sealing key, standing in for the destination's sealed-secrets
// controller.
var (
	keyOnce sync.Once
	key     sealtest.Key
	keyErr  error
)

func testSealingKey(t testing.TB) sealtest.Key {
	t.Helper()
	keyOnce.Do(func() { key, keyErr = sealtest.NewKey(2048) })
	require.NoError(t, keyErr)
	return key
}

// platformKey derives each request's fingerprint key, as the controller's
// does.
var platformKey = bytes.Repeat([]byte{0x42}, 32)

// secrets serves platform configuration Secrets from memory.
type secrets map[string]map[string][]byte

func (s secrets) Get(_ context.Context, namespace, name string) (map[string][]byte, error) {
	d, ok := s[namespace+"/"+name]
	if !ok {
		return nil, fmt.Errorf("Secret %s/%s not found", namespace, name)
	}
	return d, nil
}

// platform runs the promise's real workflows (promise.yaml's pipelines:
// the database stage, then the real seal stage) in-process with a folder
// ledger and in-memory platform Secrets: everything the controller gives
// the pipelines, without the controller.
type platform struct {
	t       *testing.T
	promise *v1alpha1.Promise
	crd     *apiextensionsv1.CustomResourceDefinition
	engine  *pipelines.Engine
	ledger  *ledger.Folder
	secrets secrets
	key     sealtest.Key
}

func newPlatform(t *testing.T, server database.Server) *platform {
	t.Helper()
	p, err := local.LoadPromise(".")
	require.NoError(t, err)
	crd, err := apischema.CRD(p)
	require.NoError(t, err)
	l, err := ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	reg := stage.NewRegistry()
	for name, f := range database.Stages() {
		require.NoError(t, reg.Register(name, f))
	}
	require.NoError(t, reg.Register(seal.StageName, seal.Stage))
	sec := secrets{serverSecretNamespace + "/" + serverSecretName: server.Data()}
	seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
		return pipelines.InProcess{Registry: reg, Ledger: l, Secrets: sec}, nil
	}}
	return &platform{
		t: t, promise: p, crd: crd, ledger: l, secrets: sec, key: testSealingKey(t),
		engine: &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }},
	}
}

// serverOf is the platform Secret's view of a pgtest server.
func serverOf(s *pgtest.Server) database.Server {
	return database.Server{Host: s.Host, Port: s.Port, Username: s.User, Password: s.Password, SSLMode: "disable"}
}

// request returns a Database request; uid tells requests of the same name
// apart, as the apiserver does.
func request(namespace, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "database.promised.dev/v1", "kind": "Database",
		"metadata": map[string]any{"name": name, "namespace": namespace},
		"spec":     spec,
	}}
	u.SetUID(types.UID("uid-" + namespace + "-" + name))
	return u
}

// checked is the request as the apiserver would store it: defaulted and
// validated by the promise's schema.
func (p *platform) checked(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return apischema.Check(p.crd, obj)
}

// run runs the request's configure or delete workflow with previous as
// the state store's copy of its last output. The object goes through the
// schema first unless raw is set (to reach the stage's own checks).
func (p *platform) run(action contract.Action, obj *unstructured.Unstructured, previous map[string][]byte, raw bool) (*pipelines.Result, error) {
	p.t.Helper()
	if !raw {
		var err error
		if obj, err = p.checked(obj); err != nil {
			return nil, err
		}
	}
	fpKey, err := seal.DeriveFingerprintKey(platformKey, p.promise.Name, obj.GetNamespace(), obj.GetName())
	require.NoError(p.t, err)
	inputs, err := seal.Inputs(p.key.CertPEM, "", fpKey)
	require.NoError(p.t, err)
	w := pipelines.Workflow{
		PromiseName: p.promise.Name, Type: contract.TypeResource, Action: action,
		Object: obj, Previous: previous, Inputs: inputs,
		Pipelines: p.promise.Spec.Workflows.Resource.Configure,
	}
	if action == contract.ActionDelete {
		w.Pipelines = p.promise.Spec.Workflows.Resource.Delete
	}
	return p.engine.Run(context.Background(), w)
}

func (p *platform) configure(obj *unstructured.Unstructured, previous map[string][]byte) (*pipelines.Result, error) {
	p.t.Helper()
	return p.run(contract.ActionConfigure, obj, previous, false)
}

func (p *platform) delete(obj *unstructured.Unstructured, previous map[string][]byte) (*pipelines.Result, error) {
	p.t.Helper()
	return p.run(contract.ActionDelete, obj, previous, false)
}

// ledgerKeys lists the request's ledger entries.
func (p *platform) ledgerKeys(obj *unstructured.Unstructured) []ledger.Key {
	p.t.Helper()
	keys, err := p.ledger.List(context.Background(), ledger.OwnerFromObject(p.promise.Name, obj))
	require.NoError(p.t, err)
	return keys
}

// password is the request's password as the ledger holds it.
func (p *platform) password(obj *unstructured.Unstructured) string {
	p.t.Helper()
	e, found, err := p.ledger.Get(context.Background(), ledger.Key{Owner: ledger.OwnerFromObject(p.promise.Name, obj), Credential: database.CredentialName})
	require.NoError(p.t, err)
	require.True(p.t, found)
	return string(e.Data["password"])
}

// unseal opens the SealedSecret in an output file with the test's
// private key, through the sealed-secrets controller's own Unseal: what
// the workload's cluster would make of it.
func (p *platform) unseal(files map[string][]byte, file string) map[string][]byte {
	p.t.Helper()
	data, ok := files[file]
	require.True(p.t, ok, "no output file %s (have %v)", file, keysOf(files))
	got, err := p.key.Unseal(data)
	require.NoError(p.t, err)
	return got
}

// credentials are the workload's connection settings, unsealed from the
// configure output.
func (p *platform) credentials(files map[string][]byte) map[string][]byte {
	p.t.Helper()
	return p.unseal(files, "configure/"+database.CredentialsFile)
}

func keysOf(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// connectWith connects as the workload would, with its Secret's uri.
func connectWith(ctx context.Context, creds map[string][]byte) (*pgx.Conn, error) {
	return pgx.Connect(ctx, string(creds["uri"]))
}

// requireNoPlaintext fails if any password appears in a result's files or
// status, or in an error.
func requireNoPlaintext(t *testing.T, passwords []string, res *pipelines.Result, err error) {
	t.Helper()
	for _, pw := range passwords {
		require.NotEmpty(t, pw)
		if err != nil {
			require.NotContains(t, err.Error(), pw, "an error holds a password")
		}
		if res == nil {
			continue
		}
		for name, data := range res.Files() {
			require.NotContains(t, string(data), pw, "output file %s holds a password", name)
		}
		status, mErr := yaml.Marshal(res.Status)
		require.NoError(t, mErr)
		require.NotContains(t, string(status), pw, "the status holds a password")
	}
}

// requireNotInServerLog fails if the shared server ever saw a password:
// it logs every statement, and the stage only ever sends SCRAM verifiers.
func requireNotInServerLog(t *testing.T, passwords ...string) {
	t.Helper()
	log, err := os.ReadFile(database.SharedServer().LogPath())
	require.NoError(t, err)
	require.True(t, strings.Contains(string(log), "statement:"), "the server logs statements")
	for _, pw := range passwords {
		require.NotContains(t, string(log), pw, "the server's log holds a password")
	}
}
