package job_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/job"
	"promised.dev/promised/pipelines/job/internal/jobtest"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/test/controlplane"
	"promised.dev/promised/test/kubelet"
)

// platformNamespace is where promise workflows run in these tests.
const platformNamespace = "promised-platform"

var (
	kc  client.WithWatch
	kub *kubelet.Kubelet
	seq atomic.Int64
)

// TestMain builds the reader, writer and jobtest images while the control
// plane starts, then starts the test kubelet that runs the Jobs' pods.
func TestMain(m *testing.M) {
	built := make(chan error, 1)
	go func() { built <- buildImages() }()
	os.Exit(controlplane.RunTests(runner(func() int {
		defer kub.Stop()
		return m.Run()
	}), controlplane.Options{}, func(cp *controlplane.ControlPlane) error {
		if err := <-built; err != nil {
			return fmt.Errorf("building the test images: %w", err)
		}
		var err error
		// The controller's client allows 200 queries a second; client-go's
		// default of 5 would throttle the parallel tests into timeouts.
		cfg := rest.CopyConfig(cp.Config)
		cfg.QPS, cfg.Burst = 200, 400
		if kc, err = client.NewWithWatch(cfg, client.Options{Scheme: clientgoscheme.Scheme}); err != nil {
			return err
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: platformNamespace}}
		if err := kc.Create(context.Background(), ns); err != nil {
			return err
		}
		kub, err = kubelet.Start(kubelet.Options{Config: cp.Config, Logf: testLogf()})
		return err
	}))
}

type runner func() int

func (r runner) Run() int { return r() }

func testLogf() func(string, ...any) {
	if os.Getenv("PROMISED_TEST_LOG") == "" {
		return nil
	}
	return func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
}

// buildImages builds the real promised-stage binary into the reader and
// writer images and the jobtest stage into its own, all FROM scratch.
func buildImages() error {
	if err := kubelet.CheckDocker(""); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "job-test-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	promisedStage, stagebin := filepath.Join(dir, "promised-stage"), filepath.Join(dir, "stagebin")
	var g errgroup.Group
	g.Go(func() error {
		return kubelet.BuildBinary(ctx, "promised.dev/promised/cmd/promised-stage", promisedStage)
	})
	g.Go(func() error { return kubelet.BuildBinary(ctx, "./internal/jobtest/stagebin", stagebin) })
	if err := g.Wait(); err != nil {
		return err
	}
	g.Go(func() error {
		return kubelet.BuildImage(ctx, "", promisedStage, stage.Image(job.ReaderStageName), job.ReaderStageName)
	})
	g.Go(func() error {
		return kubelet.BuildImage(ctx, "", promisedStage, stage.Image(job.WriterStageName), job.WriterStageName)
	})
	g.Go(func() error { return kubelet.BuildImage(ctx, "", stagebin, stage.Image(jobtest.Name)) })
	for _, how := range []string{jobtest.EvilEscape, jobtest.EvilForge} {
		g.Go(func() error { return kubelet.BuildImage(ctx, "", stagebin, evilWriterImage(how), "evil-writer", how) })
	}
	return g.Wait()
}

// evilWriterImage replaces the Job's writer with jobtest.EvilWriter.
func evilWriterImage(how string) string {
	return "promised.dev/test/evil-writer:" + how
}

func testContext(t *testing.T) context.Context {
	ctx := context.Background()
	if os.Getenv("PROMISED_TEST_LOG") != "" {
		ctx = logr.NewContext(ctx, testr.NewWithOptions(t, testr.Options{Verbosity: 1}))
	}
	return ctx
}

func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("job-%d", seq.Add(1))
	require.NoError(t, kc.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	return name
}

func newRunner(t *testing.T, change func(*job.Options)) *job.Runner {
	t.Helper()
	opts := job.Options{Client: kc, Namespace: platformNamespace, PollInterval: 200 * time.Millisecond}
	if change != nil {
		change(&opts)
	}
	r, err := job.New(opts)
	require.NoError(t, err)
	return r
}

func request(ns string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "example.promised.dev/v1", "kind": "JobTest",
		"metadata": map[string]any{"name": "payments", "namespace": ns},
		"spec":     map[string]any{"owner": "alice@example.com", "size": "small"},
	}}
}

func container(name string, env ...string) v1alpha1.Container {
	c := v1alpha1.Container{Name: name, Image: stage.Image(jobtest.Name)}
	for i := 0; i+1 < len(env); i += 2 {
		c.Env = append(c.Env, v1alpha1.EnvVar{Name: env[i], Value: env[i+1]})
	}
	return c
}

func pipeline(name string, cs ...v1alpha1.Container) v1alpha1.Pipeline {
	return v1alpha1.Pipeline{Metadata: v1alpha1.PipelineMetadata{Name: name}, Spec: v1alpha1.PipelineSpec{Containers: cs}}
}

func workflow(ns string, ps ...v1alpha1.Pipeline) pipelines.Workflow {
	return pipelines.Workflow{
		PromiseName: "jobtest", Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: ps, Object: request(ns),
	}
}

func jobEngine(r pipelines.PipelineRunner) *pipelines.Engine {
	return &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) { return r, nil }}
}

// newWorkspace is a workspace at root holding a small input object, for
// calling the runner without the engine.
func newWorkspace(t *testing.T, root string) contract.Workspace {
	t.Helper()
	ws := contract.Workspace{Root: root}
	require.NoError(t, ws.Create())
	require.NoError(t, os.WriteFile(ws.ObjectPath(), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"), 0o644))
	return ws
}

func envFor(ns, pipeline string) contract.Env {
	return contract.Env{
		Action: contract.ActionConfigure, Type: contract.TypeResource, PromiseName: "jobtest", PipelineName: pipeline,
		ObjectKind: "ConfigMap", ObjectVersion: "v1", ObjectName: "x", ObjectNamespace: ns,
	}
}

// pipelineLabels selects what the runner granted the jobtest promise's
// pipeline.
func pipelineLabels(pipeline string) client.MatchingLabels {
	return client.MatchingLabels{job.LabelManagedBy: job.ManagedBy, job.LabelPromise: "jobtest", job.LabelPipeline: pipeline}
}

// requireCleanedUp checks that nothing of any run is left in ns: Jobs,
// input Secrets, output ConfigMaps and (through the kubelet's stand-in for
// the garbage collector) pods.
func requireCleanedUp(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	runs := client.HasLabels{job.LabelRun}
	for _, list := range []client.ObjectList{&batchv1.JobList{}, &corev1.SecretList{}, &corev1.ConfigMapList{}} {
		require.NoError(t, kc.List(ctx, list, client.InNamespace(ns), runs))
		n, err := metaLen(list)
		require.NoError(t, err)
		require.Zero(t, n, "%T left behind in %s", list, ns)
	}
	require.Eventually(t, func() bool {
		pods := &corev1.PodList{}
		require.NoError(t, kc.List(ctx, pods, client.InNamespace(ns), runs))
		return len(pods.Items) == 0
	}, 30*time.Second, 100*time.Millisecond, "pods left behind in %s", ns)
}

func metaLen(list client.ObjectList) (int, error) {
	switch l := list.(type) {
	case *batchv1.JobList:
		return len(l.Items), nil
	case *corev1.SecretList:
		return len(l.Items), nil
	case *corev1.ConfigMapList:
		return len(l.Items), nil
	}
	return 0, fmt.Errorf("unexpected list %T", list)
}

// runsIn returns the kubelet's runs of Jobs in ns.
func runsIn(ns string) []kubelet.Run {
	var out []kubelet.Run
	for _, r := range kub.Runs() {
		if r.Job.Namespace == ns {
			out = append(out, r)
		}
	}
	return out
}

func TestSameOutputAsInProcess(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	reg := stage.NewRegistry()
	require.NoError(t, reg.Register(jobtest.Name, jobtest.Stage))
	inProcess := &pipelines.Engine{Choose: func(v1alpha1.Pipeline) (pipelines.PipelineRunner, error) {
		return pipelines.Sequential{Pick: func(v1alpha1.Container) (pipelines.ContainerRunner, error) {
			return pipelines.InProcess{Registry: reg}, nil
		}}, nil
	}}
	wf := workflow(ns,
		pipeline("one", container("first", "JOBTEST_ROLE", "first"), container("second", "JOBTEST_ROLE", "second")),
		pipeline("two", container("first", "JOBTEST_ROLE", "first")),
	)
	wf.Previous = map[string][]byte{"two/first.yaml": []byte("kept from last time")}
	wf.Inputs = map[string][]byte{"facts/region.txt": []byte("eu-west-1")}

	want, err := inProcess.Run(ctx, wf)
	require.NoError(t, err)
	got, err := jobEngine(newRunner(t, nil)).Run(ctx, wf)
	require.NoError(t, err)
	require.Equal(t, want, got)

	// The output is the real thing, not two empty results alike.
	files := got.Files()
	two := string(files["two/nested/first.yaml"])
	for _, s := range []string{
		"previous: kept from last time", "input.region: eu-west-1", "status.seen: one/second",
		"KRATIX_OBJECT_NAMESPACE: " + ns, "KRATIX_PIPELINE_NAME: two", "spec.owner: alice@example.com",
	} {
		require.Contains(t, two, s)
	}
	require.Contains(t, string(files["one/nested/second.yaml"]), "role: second")
	require.Equal(t, "nested", got.Pipelines[0].Selectors[0].Directory)
	require.Equal(t, "two/first", got.Status["seen"])
	require.Len(t, got.Status["conditions"], 2)

	// Each pipeline ran as one Job: reader, the pipeline's containers in
	// order, writer.
	runs := runsIn(ns)
	require.Len(t, runs, 2)
	var names []string
	for _, c := range runs[0].Containers {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{job.ReaderContainer, "first", "second", job.WriterContainer}, names)
	requireCleanedUp(t, ns)
}

func TestJobSpec(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	p := pipeline("spec", container("only", "JOBTEST_ROLE", "first"))
	p.Spec.Timeout = &metav1.Duration{Duration: 90 * time.Second}
	_, err := jobEngine(newRunner(t, nil)).Run(ctx, workflow(ns, p))
	require.NoError(t, err)

	runs := runsIn(ns)
	require.Len(t, runs, 1)
	j := runs[0].Job
	require.Empty(t, validation.IsDNS1123Label(j.Name))
	require.True(t, strings.HasPrefix(j.Name, "jobtest-spec-"), j.Name)
	require.Equal(t, map[string]string{
		job.LabelManagedBy: job.ManagedBy, job.LabelPromise: "jobtest", job.LabelPipeline: "spec",
		job.LabelRequest: "payments", job.LabelRun: j.Name,
	}, j.Labels)
	require.EqualValues(t, 0, *j.Spec.BackoffLimit)
	require.EqualValues(t, 90, *j.Spec.ActiveDeadlineSeconds)
	require.EqualValues(t, job.DefaultTTL.Seconds(), *j.Spec.TTLSecondsAfterFinished)
	require.Equal(t, "promised-jobtest-pipeline", j.Spec.Template.Spec.ServiceAccountName)

	byName := map[string][]string{}
	for _, c := range runs[0].Containers {
		byName[c.Name] = c.DockerArgs
	}
	user := strings.Join(byName["only"], " ")
	for _, s := range []string{"--user 65532:65532", "--read-only", "--cap-drop ALL", "--security-opt no-new-privileges", "--memory 536870912", ":/kratix/output", ":/kratix/input", ":/tmp"} {
		require.Contains(t, user, s)
	}
	// No permissions asked for: no token for the pipeline's container; the
	// writer has one.
	require.NotContains(t, user, job.ServiceAccountPath)
	require.Contains(t, strings.Join(byName[job.WriterContainer], " "), ":"+job.ServiceAccountPath+":ro")
	require.Contains(t, strings.Join(byName[job.WriterContainer], " "), "/kratix/output:ro")
	requireCleanedUp(t, ns)
}

func TestFailingContainerIsNamed(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	p := pipeline("breaks",
		container("fine", "JOBTEST_ROLE", "first"),
		container("on-fire", "JOBTEST_MODE", "fail", "JOBTEST_MESSAGE", "the database is on fire"),
		container("never", "JOBTEST_ROLE", "second"),
	)
	_, err := jobEngine(newRunner(t, nil)).Run(ctx, workflow(ns, p))
	require.Error(t, err)
	var pe *pipelines.Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "on-fire", pe.Container)
	require.Equal(t, "breaks", pe.Pipeline)
	require.Equal(t, stage.Image(jobtest.Name), pe.Image)
	require.Contains(t, err.Error(), "exited with code 1 (Error)")
	require.Contains(t, err.Error(), "the database is on fire")
	requireCleanedUp(t, ns)
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	p := pipeline("slow", container("sleeper", "JOBTEST_MODE", "sleep", "JOBTEST_SLEEP", "1m"))
	p.Spec.Timeout = &metav1.Duration{Duration: 3 * time.Second}
	start := time.Now()
	_, err := jobEngine(newRunner(t, nil)).Run(ctx, workflow(ns, p))
	require.ErrorIs(t, err, job.ErrTimeout)
	require.Contains(t, err.Error(), "timed out after 3s")
	var pe *pipelines.Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "sleeper", pe.Container, "the error names the container that was running: %v", err)
	require.Less(t, time.Since(start), 20*time.Second)
	requireCleanedUp(t, ns)
}

func TestSymlinkInOutputIsRefused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	// A symlink to the pod's token would hand the token back as output.
	_, err := jobEngine(newRunner(t, nil)).Run(ctx, workflow(ns, pipeline("sneaky", container("links", "JOBTEST_MODE", "symlink"))))
	var pe *pipelines.Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, job.WriterContainer, pe.Container)
	require.Contains(t, err.Error(), "output/token is a symlink")
	require.Contains(t, err.Error(), job.ErrNotRegular.Error())
	requireCleanedUp(t, ns)
}

// TestEscapingOutputIsRefused hands back, with the run's key, an archive
// whose entry climbs out of the output folder: the runner refuses it and
// writes nothing.
func TestEscapingOutputIsRefused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	r := newRunner(t, func(o *job.Options) { o.WriterImage = evilWriterImage(jobtest.EvilEscape) })
	ws := newWorkspace(t, filepath.Join(t.TempDir(), "a", "b"))
	err := r.RunPipeline(ctx, pipeline("escapes", container("first", "JOBTEST_ROLE", "first")), ws, envFor(ns, "escapes"))
	require.ErrorContains(t, err, `unpacking "output/../../escaped.yaml"`)
	require.ErrorContains(t, err, `path element ".."`)
	require.NoFileExists(t, filepath.Join(filepath.Dir(ws.Root), "escaped.yaml"))
	requireCleanedUp(t, ns)
}

// TestForgedOutputIsRefused hands back output made without the run's key.
func TestForgedOutputIsRefused(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	r := newRunner(t, func(o *job.Options) { o.WriterImage = evilWriterImage(jobtest.EvilForge) })
	_, err := jobEngine(r).Run(ctx, workflow(ns, pipeline("forged", container("first", "JOBTEST_ROLE", "first"))))
	require.ErrorIs(t, err, job.ErrHandback)
	require.ErrorContains(t, err, "its MAC does not match this run's key")
	requireCleanedUp(t, ns)
}

func TestLargeHandoffIsChunked(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	blob := make([]byte, 20<<10)
	_, err := rand.Read(blob) // incompressible, so it needs several chunks
	require.NoError(t, err)
	ws := newWorkspace(t, t.TempDir())
	require.NoError(t, os.WriteFile(filepath.Join(ws.Input(), "blob.bin"), blob, 0o644))
	r := newRunner(t, func(o *job.Options) { o.ChunkBytes = 4 << 10 })
	env := envFor(ns, "big")
	require.NoError(t, r.RunPipeline(ctx, pipeline("big", container("copies", "JOBTEST_MODE", "copy", "JOBTEST_FILE", "blob.bin")), ws, env))
	got, err := os.ReadFile(filepath.Join(ws.Output(), "blob.bin"))
	require.NoError(t, err)
	require.Equal(t, blob, got)
	runs := runsIn(ns)
	require.Len(t, runs, 1)
	for _, v := range runs[0].Job.Spec.Template.Spec.Volumes {
		if v.Projected != nil && v.Projected.Sources[0].Secret != nil {
			require.GreaterOrEqual(t, len(v.Projected.Sources), 5, "the input travels in several Secrets")
		}
	}
	requireCleanedUp(t, ns)
}

func TestPromiseWorkflowRunsInThePlatformNamespace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	promise := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "platform.promised.dev/v1alpha1", "kind": "Promise", "metadata": map[string]any{"name": "jobtest-platform"},
	}}
	res, err := jobEngine(newRunner(t, nil)).Run(ctx, pipelines.Workflow{
		PromiseName: "jobtest-platform", Type: contract.TypePromise, Action: contract.ActionConfigure,
		Pipelines: []v1alpha1.Pipeline{pipeline("promise", container("first", "JOBTEST_ROLE", "first"))}, Object: promise,
	})
	require.NoError(t, err)
	require.Contains(t, string(res.Files()["promise/nested/first.yaml"]), "KRATIX_WORKFLOW_TYPE: promise")
	var found bool
	for _, r := range runsIn(platformNamespace) {
		found = found || r.Job.Labels[job.LabelPromise] == "jobtest-platform"
	}
	require.True(t, found, "the promise's Job ran in the platform namespace")
	requireCleanedUp(t, platformNamespace)
}

// TestPermissions runs a pipeline that reads a ConfigMap in another
// namespace with the permission it asked for, then checks that its
// ServiceAccount holds exactly that and the hand-back's create.
func TestPermissions(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns, shared := newNamespace(t), newNamespace(t)
	require.NoError(t, kc.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings", Namespace: shared}, Data: map[string]string{"region": "eu-west-1"},
	}))
	p := pipeline("reads", container("fetch", "JOBTEST_MODE", "api", "JOBTEST_GET", shared+"/settings"))
	p.Spec.RBAC.Permissions = []v1alpha1.PolicyRule{{
		ResourceNamespace: shared, APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}, ResourceNames: []string{"settings"},
	}}
	res, err := jobEngine(newRunner(t, nil)).Run(ctx, workflow(ns, p))
	require.NoError(t, err)
	require.Contains(t, string(res.Files()["reads/fetched.yaml"]), "region: eu-west-1")

	sa := &corev1.ServiceAccount{}
	require.NoError(t, kc.Get(ctx, client.ObjectKey{Namespace: ns, Name: "promised-jobtest-pipeline"}, sa))
	require.False(t, *sa.AutomountServiceAccountToken)
	handback := &rbacv1.Role{}
	require.NoError(t, kc.Get(ctx, client.ObjectKey{Namespace: ns, Name: "promised-jobtest-handback"}, handback))
	require.Equal(t, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}}}, handback.Rules)
	granted := &rbacv1.RoleList{}
	require.NoError(t, kc.List(ctx, granted, client.InNamespace(shared), pipelineLabels("reads")))
	require.Len(t, granted.Items, 1)
	require.Equal(t, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}, ResourceNames: []string{"settings"}}}, granted.Items[0].Rules)
	bindings := &rbacv1.RoleBindingList{}
	require.NoError(t, kc.List(ctx, bindings, client.InNamespace(shared), pipelineLabels("reads")))
	require.Len(t, bindings.Items, 1)
	require.Equal(t, granted.Items[0].Name, bindings.Items[0].RoleRef.Name)
	require.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "promised-jobtest-pipeline", Namespace: ns}}, bindings.Items[0].Subjects)
	roles := &rbacv1.RoleList{}
	require.NoError(t, kc.List(ctx, roles, client.InNamespace(ns)))
	require.Len(t, roles.Items, 1, "no Role in the request's namespace but the hand-back's")

	user := "system:serviceaccount:" + ns + ":promised-jobtest-pipeline"
	for _, c := range []struct {
		ns, verb, resource, name string
		allowed                  bool
	}{
		{ns, "create", "configmaps", "", true},
		{ns, "get", "configmaps", "", false},
		{ns, "list", "configmaps", "", false},
		{ns, "delete", "configmaps", "", false},
		{ns, "update", "configmaps", "", false},
		{ns, "get", "secrets", "", false},
		{ns, "create", "jobs", "", false},
		{shared, "get", "configmaps", "settings", true},
		{shared, "get", "configmaps", "other", false},
		{shared, "create", "configmaps", "", false},
	} {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: c.ns, Verb: c.verb, Resource: c.resource, Name: c.name},
		}}
		require.NoError(t, kc.Create(ctx, review))
		require.Equal(t, c.allowed, review.Status.Allowed, "%s %s %s/%s", c.verb, c.resource, c.ns, c.name)
	}
	requireCleanedUp(t, ns)
}

func TestCeiling(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	ceiling := &job.Ceiling{Rules: []job.CeilingRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}, ClusterWide: true},
	}}
	bounded := newRunner(t, func(o *job.Options) { o.Ceiling = ceiling })
	unbounded := newRunner(t, nil)
	ask := func(perms ...v1alpha1.PolicyRule) v1alpha1.Pipeline {
		p := pipeline("asks", container("first", "JOBTEST_ROLE", "first"))
		p.Spec.RBAC.Permissions = perms
		return p
	}
	getCM := v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}
	deleteSecrets := v1alpha1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "delete"}}
	allCM := v1alpha1.PolicyRule{ResourceNamespace: "*", APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}
	allDeployments := v1alpha1.PolicyRule{ResourceNamespace: "*", APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}}

	for _, c := range []struct {
		name   string
		runner *job.Runner
		perms  []v1alpha1.PolicyRule
		want   string
		beyond bool
	}{
		{"beyond the ceiling", bounded, []v1alpha1.PolicyRule{getCM, deleteSecrets}, `spec.rbac.permissions[1] (apiGroups [""], resources ["secrets"], verbs ["get" "delete"]): verb "get" on "secrets" (core group): beyond the Job runner's RBAC ceiling`, true},
		{"cluster-wide under a namespaced rule", bounded, []v1alpha1.PolicyRule{allCM}, `verb "get" on "configmaps" (core group) in every namespace: beyond`, true},
		{"cluster-wide without a ceiling", unbounded, []v1alpha1.PolicyRule{allDeployments}, `cluster-wide permissions (resourceNamespace "*") need a ceiling that allows them`, true},
		{"a namespace pattern", unbounded, []v1alpha1.PolicyRule{{ResourceNamespace: "team-*", Verbs: []string{"get"}}}, `resourceNamespace "team-*"`, false},
	} {
		_, err := jobEngine(c.runner).Run(ctx, workflow(ns, ask(c.perms...)))
		require.ErrorContains(t, err, c.want, c.name)
		require.ErrorContains(t, err, `pipeline "asks"`, c.name)
		require.Equal(t, c.beyond, errors.Is(err, job.ErrBeyondCeiling), c.name)
	}
	// Nothing was created for a refused pipeline.
	sas := &corev1.ServiceAccountList{}
	require.NoError(t, kc.List(ctx, sas, client.InNamespace(ns), client.MatchingLabels{job.LabelManagedBy: job.ManagedBy}))
	require.Empty(t, sas.Items)
	require.Empty(t, runsIn(ns))

	// What the ceiling allows is granted, cluster-wide included.
	_, err := jobEngine(bounded).Run(ctx, workflow(ns, ask(getCM, allDeployments)))
	require.NoError(t, err)
	crs := &rbacv1.ClusterRoleList{}
	require.NoError(t, kc.List(ctx, crs, pipelineLabels("asks")))
	require.Len(t, crs.Items, 1)
	require.Equal(t, []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}}}, crs.Items[0].Rules)
	// ClusterRoleBindings are cluster-scoped: find this namespace's (a
	// repeated test run leaves others).
	crbs := &rbacv1.ClusterRoleBindingList{}
	require.NoError(t, kc.List(ctx, crbs, pipelineLabels("asks")))
	subject := rbacv1.Subject{Kind: "ServiceAccount", Name: "promised-jobtest-pipeline", Namespace: ns}
	var bound []rbacv1.ClusterRoleBinding
	for _, b := range crbs.Items {
		if slices.Contains(b.Subjects, subject) {
			bound = append(bound, b)
		}
	}
	require.Len(t, bound, 1)
	require.Equal(t, crs.Items[0].Name, bound[0].RoleRef.Name)
	require.Equal(t, []rbacv1.Subject{subject}, bound[0].Subjects)
	roles := &rbacv1.RoleList{}
	require.NoError(t, kc.List(ctx, roles, client.InNamespace(ns), pipelineLabels("asks")))
	require.Len(t, roles.Items, 1)
	require.Equal(t, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}, roles.Items[0].Rules)
	requireCleanedUp(t, ns)
}

// TestConcurrentRunsShareTheIdentity runs the same promise's pipeline for
// several requests of one namespace at once: they race to create the same
// ServiceAccount and Roles, and none may fail for it.
func TestConcurrentRunsShareTheIdentity(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	r := newRunner(t, nil)
	var g errgroup.Group
	for i := range 3 {
		g.Go(func() error {
			wf := workflow(ns, pipeline("one", container("first", "JOBTEST_ROLE", "first")))
			wf.Object.SetName(fmt.Sprintf("request-%d", i))
			_, err := jobEngine(r).Run(ctx, wf)
			return err
		})
	}
	require.NoError(t, g.Wait())
	names := map[string]bool{}
	for _, run := range runsIn(ns) {
		names[run.Job.Name] = true
	}
	require.Len(t, names, 3, "every run is its own Job")
	requireCleanedUp(t, ns)
}

func TestReservedContainerName(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	_, err := jobEngine(newRunner(t, nil)).Run(context.Background(), workflow(ns, pipeline("p", container(job.WriterContainer))))
	require.ErrorContains(t, err, `container name "promised-job-writer" is reserved`)
	require.Empty(t, runsIn(ns))
}
