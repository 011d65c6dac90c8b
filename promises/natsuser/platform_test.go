package natsuser

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
	"promised.dev/promised/promises/natsuser/natstest"
)

// The platform Secret of the tests, where promise.yaml's env points.
const (
	platformNamespace = "promised-system"
	platformName      = "nats-accounts"
)

// sealingKey is the destination's sealed-secrets key pair; generating one
// takes a good fraction of a second, so the tests share it.
var sealingKey = sync.OnceValues(func() (sealtest.Key, error) { return sealtest.NewKey(2048) })

// platformData is the platform Secret an operator writes for ns (see
// README.md), with servers as its client URLs.
func platformData(t testing.TB, ns *natstest.System, servers string) map[string]string {
	t.Helper()
	d := map[string]string{
		KeyServers:             servers,
		KeyOperatorSigningSeed: natstest.Seed(t, ns.OperatorSigner),
		KeyOperatorJWT:         ns.OperatorJWT,
		KeySystemCreds:         string(ns.SysCreds),
	}
	for name, a := range ns.Accounts {
		if name == "SYS" {
			continue
		}
		d[name+SuffixPublicKey] = a.Pub
		// As `kubectl create secret --from-file` stores it.
		d[name+SuffixSigningSeed] = natstest.Seed(t, a.Signer) + "\n"
	}
	return d
}

// clock is the stages' clock: the wall clock moved by an offset, so that
// JWTs issued "later" are still judged by the real server's real clock.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// rig is what the controller gives the promise's pipelines: the engine
// with this promise's stages and the seal stage in-process, a credential
// ledger, the platform Secrets and the sealing inputs.
type rig struct {
	t       *testing.T
	nats    *natstest.System
	clock   *clock
	ledger  *ledger.Folder
	promise *v1alpha1.Promise
	crd     *apiextensionsv1.CustomResourceDefinition
	engine  *pipelines.Engine
	secrets *platformSecrets
	// previous holds each request's last output, as the state store would.
	previous map[string]map[string][]byte
}

// platformSecrets serves the platform Secrets from an objects folder
// (local.FolderObjects, what local runs use) that a test may rewrite, as an
// operator edits the Secret.
type platformSecrets struct {
	mu  sync.Mutex
	dir string
	fo  *local.FolderObjects
}

func (s *platformSecrets) Get(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	s.mu.Lock()
	fo := s.fo
	s.mu.Unlock()
	return fo.Get(ctx, namespace, name)
}

// set writes the platform Secret with data.
func (s *platformSecrets) set(t testing.TB, data map[string]string) {
	t.Helper()
	sec := corev1.Secret{}
	sec.APIVersion, sec.Kind = "v1", "Secret"
	sec.Namespace, sec.Name = platformNamespace, platformName
	sec.Labels = map[string]string{stage.LabelPlatformConfig: "true"}
	sec.StringData = data
	raw, err := yaml.Marshal(sec)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(s.dir, "nats-accounts.yaml"), raw, 0o600))
	fo, err := local.LoadFolderObjects(s.dir)
	require.NoError(t, err)
	s.mu.Lock()
	s.fo = fo
	s.mu.Unlock()
}

func newRig(t *testing.T, ns *natstest.System) *rig {
	t.Helper()
	p := &rig{t: t, nats: ns, clock: &clock{}, previous: map[string]map[string][]byte{}}
	var err error
	p.ledger, err = ledger.NewFolder(t.TempDir())
	require.NoError(t, err)
	p.promise, err = local.LoadPromise(".")
	require.NoError(t, err)
	p.crd, err = apischema.CRD(p.promise)
	require.NoError(t, err)
	p.secrets = &platformSecrets{dir: t.TempDir()}
	p.secrets.set(t, platformData(t, ns, ns.URL))

	reg := stage.NewRegistry()
	for name, f := range StagesAt(p.clock.now) {
		require.NoError(t, reg.Register(name, f))
	}
	require.NoError(t, reg.Register(seal.StageName, seal.Stage))
	inproc := pipelines.InProcess{Registry: reg, Ledger: p.ledger, Secrets: p.secrets}
	seq := pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) { return inproc, nil }}
	p.engine = &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return seq, nil }}
	return p
}

// request returns a NatsUser as the apiserver would hand it over: checked
// against the promise's schema, defaults applied.
func (p *rig) request(name string, spec map[string]any) *unstructured.Unstructured {
	p.t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nats.promised.dev/v1alpha1", "kind": "NatsUser",
		"metadata": map[string]any{"name": name, "namespace": "payments", "uid": "uid-" + name},
		"spec":     spec,
	}}
	checked, err := apischema.Check(p.crd, obj)
	require.NoError(p.t, err)
	return checked
}

func (p *rig) workflow(obj *unstructured.Unstructured, action contract.Action) pipelines.Workflow {
	p.t.Helper()
	key, err := sealingKey()
	require.NoError(p.t, err)
	fpKey, err := seal.DeriveFingerprintKey([]byte(strings.Repeat("k", 32)), p.promise.Name, obj.GetNamespace(), obj.GetName())
	require.NoError(p.t, err)
	inputs, err := seal.Inputs(key.CertPEM, "", fpKey)
	require.NoError(p.t, err)
	pls := p.promise.Spec.Workflows.Resource.Configure
	if action == contract.ActionDelete {
		pls = p.promise.Spec.Workflows.Resource.Delete
	}
	return pipelines.Workflow{
		PromiseName: p.promise.Name, Type: contract.TypeResource, Action: action, Pipelines: pls,
		Object: obj, Inputs: inputs, Previous: p.previous[obj.GetName()],
	}
}

// configure runs the configure workflow and keeps its output as the
// request's previous output, as the controller does after a commit.
func (p *rig) configure(obj *unstructured.Unstructured) (*pipelines.Result, error) {
	res, err := p.engine.Run(context.Background(), p.workflow(obj, contract.ActionConfigure))
	if err == nil {
		p.previous[obj.GetName()] = res.Files()
	}
	return res, err
}

func (p *rig) mustConfigure(obj *unstructured.Unstructured) *pipelines.Result {
	p.t.Helper()
	res, err := p.configure(obj)
	require.NoError(p.t, err)
	p.checkNoLeak(res, nil)
	return res
}

func (p *rig) delete(obj *unstructured.Unstructured) error {
	_, err := p.engine.Run(context.Background(), p.workflow(obj, contract.ActionDelete))
	return err
}

// entry returns the request's ledger entry.
func (p *rig) entry(obj *unstructured.Unstructured) (ledger.Entry, bool) {
	p.t.Helper()
	e, found, err := p.ledger.Get(context.Background(), ledger.Key{Owner: ledger.OwnerFromObject(p.promise.Name, obj), Credential: credentialName})
	require.NoError(p.t, err)
	return e, found
}

// checkNoLeak fails when a secret of the NATS system, or any user's seed or
// JWT recorded in the ledger, appears in the result's files or status, or
// in err.
func (p *rig) checkNoLeak(res *pipelines.Result, err error) {
	p.t.Helper()
	secrets := p.nats.Secrets(p.t)
	require.NoError(p.t, filepath.WalkDir(p.ledger.Dir(), func(path string, d os.DirEntry, werr error) error {
		if werr != nil || d.IsDir() {
			return werr
		}
		data, rerr := os.ReadFile(path)
		require.NoError(p.t, rerr)
		var rec struct {
			Data map[string][]byte `json:"data"`
		}
		require.NoError(p.t, yaml.Unmarshal(data, &rec))
		for _, v := range rec.Data {
			secrets = append(secrets, string(v))
		}
		return nil
	}))
	var texts []string
	if res != nil {
		for _, data := range res.Files() {
			texts = append(texts, string(data))
		}
		status, merr := yaml.Marshal(res.Status)
		require.NoError(p.t, merr)
		texts = append(texts, string(status))
	}
	if err != nil {
		texts = append(texts, err.Error())
	}
	for _, text := range texts {
		for _, s := range secrets {
			require.NotContains(p.t, text, strings.TrimSpace(s), "a secret leaked")
		}
	}
}

// unseal opens a result's SealedSecret with the sealed-secrets
// controller's own code, as the destination does, and mounts it.
func (p *rig) unseal(res *pipelines.Result) natstest.Workload {
	p.t.Helper()
	return p.unsealFiles(res.Files())
}

// unsealFiles unseals the Secret of a request's output as the state store
// holds it.
func (p *rig) unsealFiles(files map[string][]byte) natstest.Workload {
	p.t.Helper()
	key, err := sealingKey()
	require.NoError(p.t, err)
	manifest := files["user/secret.yaml"]
	require.Contains(p.t, string(manifest), "kind: SealedSecret")
	data, err := key.Unseal(manifest)
	require.NoError(p.t, err)
	return natstest.Mount(p.t, string(data["nats.creds"]), string(data["url"]))
}
