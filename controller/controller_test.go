package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/seal/sealtest"
)

func TestPromiseInstallsItsAPI(t *testing.T) {
	e := newEnv(t)
	p := e.promise("widgets", pipeline("render", "cm"))
	e.create(p)
	got := e.waitPromiseReady(p.Name)
	require.Equal(t, "Widget", got.Status.Kind)
	require.Equal(t, e.id+".test.promised.dev/v1", got.Status.APIVersion)
	require.Equal(t, "True", condStatus(got.Status.Conditions, "APIInstalled"))

	crd := &apiextensionsv1.CustomResourceDefinition{}
	require.NoError(t, k8s.Get(e.ctx(), client.ObjectKey{Name: "widgets." + e.id + ".test.promised.dev"}, crd))
	require.Equal(t, p.Name, crd.Labels["promised.dev/promise"])
	require.NotNil(t, crd.Spec.Versions[0].Subresources.Status, "requests get a status subresource")

	// The apiserver itself now judges requests against the promise's schema.
	bad := e.request("bad", "x")
	bad.Object["spec"] = map[string]any{"value": map[string]any{"not": "a string"}}
	err := k8s.Create(e.ctx(), bad)
	require.True(t, apierrors.IsInvalid(err), "want the apiserver to refuse the request, got %v", err)
	require.Contains(t, err.Error(), "spec.value")
}

func TestRequestLifecycle(t *testing.T) {
	e := newEnv(t)
	e.destination("dev", nil)
	p := e.promise("widgets", pipeline("render", "cm"))
	p.Spec.Workflows.Resource.Delete = []v1alpha1.Pipeline{pipeline("teardown", "cleanup")}
	e.create(p)
	e.waitPromiseReady(p.Name)

	req := e.request("orders", "one")
	e.create(req)
	got := e.waitRequest(req, "Ready", "True")
	dir := requestDir("dev", "default", p.Name, req.GetName())

	// The output is in Git, at the layout's path, in the commit the status names.
	files := e.filesUnder(dir)
	require.Len(t, files, 1)
	require.Contains(t, files["render/cm.yaml"], "value: one")
	commit, _, _ := unstructured.NestedString(got.Object, "status", "commit")
	require.Equal(t, e.git.Head(e.repo, "main"), commit)
	dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
	require.Equal(t, []string{"dev-" + e.id}, dests)
	// The pipeline's status.yaml is merged in, but cannot overwrite the controller's keys.
	value, _, _ := unstructured.NestedString(got.Object, "status", "value")
	require.Equal(t, "one", value)
	gen, _, _ := unstructured.NestedInt64(got.Object, "status", "observedGeneration")
	require.Equal(t, got.GetGeneration(), gen)
	for _, c := range []string{"PipelineSucceeded", "Scheduled", "Written"} {
		require.Equal(t, "True", requestCondition(got, c)["status"], c)
	}
	require.Contains(t, got.GetFinalizers(), "platform.promised.dev/request-cleanup")
	require.Eventually(t, func() bool {
		cur := &v1alpha1.Promise{}
		return k8s.Get(e.ctx(), client.ObjectKey{Name: p.Name}, cur) == nil &&
			cur.Status.Requests == v1alpha1.RequestCounts{Total: 1, Ready: 1}
	}, 30*time.Second, 50*time.Millisecond, "the promise counts its Ready request")

	// A spec change makes exactly one new commit.
	before := e.commits()
	require.NoError(t, unstructured.SetNestedField(got.Object, "two", "spec", "value"))
	require.NoError(t, k8s.Update(e.ctx(), got))
	got = e.waitRequest(got, "Ready", "True")
	require.Eventually(t, func() bool { return strings.Contains(e.filesUnder(dir)["render/cm.yaml"], "value: two") }, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, before+1, e.commits())

	// A forced re-run with unchanged input: the pipeline runs, but nothing is
	// committed and the request's status is not written.
	runsBefore := runCount("default", req.GetName(), contract.ActionConfigure)
	commitsBefore, rvBefore := e.commits(), ""
	statusWritesBefore := metric(t, "promised_request_status_writes_total")
	got, _ = e.get(req)
	annotations := got.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations["promised.dev/reconcile-at"] = time.Now().Format(time.RFC3339Nano)
	got.SetAnnotations(annotations)
	require.NoError(t, k8s.Update(e.ctx(), got))
	rvBefore = got.GetResourceVersion()
	require.Eventually(t, func() bool { return runCount("default", req.GetName(), contract.ActionConfigure) > runsBefore }, 30*time.Second, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // let a write, if the controller wrongly made one, land
	require.Equal(t, commitsBefore, e.commits(), "an unchanged re-run must not commit")
	after, err := e.get(req)
	require.NoError(t, err)
	require.Equal(t, rvBefore, after.GetResourceVersion(), "an unchanged re-run must not write status")
	require.Equal(t, statusWritesBefore, metric(t, "promised_request_status_writes_total"), "an unchanged re-run must not even send a status patch")

	// Delete: the delete workflow runs, the folder goes, then the request.
	require.NoError(t, k8s.Delete(e.ctx(), after))
	require.Eventually(t, func() bool {
		_, err := e.get(req)
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 50*time.Millisecond)
	require.Equal(t, int64(1), runCount("default", req.GetName(), contract.ActionDelete))
	require.Empty(t, e.filesUnder(dir))
}

func TestPipelineFailureIsReportedAndRecovers(t *testing.T) {
	e := newEnv(t)
	e.destination("dev", nil)
	p := e.promise("widgets", pipeline("render", "cm"))
	e.create(p)
	e.waitPromiseReady(p.Name)

	req := e.request("broken", "x")
	req.Object["spec"] = map[string]any{"value": "x", "fail": true}
	e.create(req)
	got := e.waitRequest(req, "PipelineSucceeded", "False")
	msg := fmt.Sprint(requestCondition(got, "PipelineSucceeded")["message"])
	for _, want := range []string{`promise "` + p.Name + `"`, `pipeline "render"`, `container "cm"`, "the stage was asked to fail"} {
		require.Contains(t, msg, want)
	}
	require.Equal(t, "False", requestCondition(got, "Ready")["status"])
	require.Empty(t, e.filesUnder(requestDir("dev", "default", p.Name, req.GetName())), "nothing is written for a failed run")

	// Fixing the spec recovers without any manual cleanup.
	require.NoError(t, unstructured.SetNestedField(got.Object, false, "spec", "fail"))
	require.NoError(t, k8s.Update(e.ctx(), got))
	e.waitRequest(got, "Ready", "True")
	require.Contains(t, e.filesUnder(requestDir("dev", "default", p.Name, req.GetName()))["render/cm.yaml"], "value: x")
}

func TestNoMatchingDestinationWaitsForOne(t *testing.T) {
	e := newEnv(t)
	p := e.promise("widgets", pipeline("render", "cm"))
	p.Spec.DestinationSelectors = append(p.Spec.DestinationSelectors, v1alpha1.DestinationSelector{MatchLabels: map[string]string{"env": "prod"}})
	e.create(p)
	e.waitPromiseReady(p.Name)
	e.destination("dev", map[string]string{"env": "dev"})

	req := e.request("lonely", "x")
	e.create(req)
	got := e.waitRequest(req, "Scheduled", "False")
	msg := fmt.Sprint(requestCondition(got, "Scheduled")["message"])
	require.Contains(t, msg, "env=prod")
	require.Contains(t, msg, "test="+e.id)

	// A matching destination appears: the request is placed on it at once.
	e.destination("prod", map[string]string{"env": "prod"})
	got = e.waitRequest(req, "Ready", "True")
	dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
	require.Equal(t, []string{"prod-" + e.id}, dests)
	require.NotEmpty(t, e.filesUnder(requestDir("prod", "default", p.Name, req.GetName())))
}

func TestSchedulingIsSticky(t *testing.T) {
	e := newEnv(t)
	e.destination("a", nil)
	e.destination("b", nil)
	p := e.promise("widgets", pipeline("render", "cm"))
	e.create(p)
	e.waitPromiseReady(p.Name)

	placed := map[string]string{}
	var reqs []*unstructured.Unstructured
	for i := range 12 {
		req := e.request(fmt.Sprintf("r%d", i), "v")
		e.create(req)
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		got := e.waitRequest(req, "Ready", "True")
		dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
		require.Len(t, dests, 1)
		placed[req.GetName()] = dests[0]
	}
	used := map[string]bool{}
	for _, d := range placed {
		used[d] = true
	}
	require.Len(t, used, 2, "requests spread over both destinations: %v", placed)

	// A new destination re-runs placement but moves nothing.
	e.destination("c", nil)
	time.Sleep(time.Second)
	for _, req := range reqs {
		got := e.waitRequest(req, "Ready", "True")
		dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
		require.Equal(t, []string{placed[req.GetName()]}, dests, "request %s moved", req.GetName())
	}

	// A destination that stops matching loses its requests to the others,
	// and its folders leave the store.
	d := &v1alpha1.Destination{}
	require.NoError(t, k8s.Get(e.ctx(), client.ObjectKey{Name: "a-" + e.id}, d))
	d.Labels["test"] = "elsewhere"
	require.NoError(t, k8s.Update(e.ctx(), d))
	for _, req := range reqs {
		require.Eventually(t, func() bool {
			got, err := e.get(req)
			if err != nil {
				return false
			}
			dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
			return len(dests) == 1 && dests[0] != "a-"+e.id
		}, 60*time.Second, 50*time.Millisecond)
	}
	require.Eventually(t, func() bool { return len(e.filesUnder("a/resources")) == 0 }, 30*time.Second, 50*time.Millisecond)
}

func TestPromiseDependenciesAndDelete(t *testing.T) {
	e := newEnv(t)
	e.destination("dev", nil)
	e.destination("prod", nil)
	p := e.promise("widgets", pipeline("render", "cm"))
	dep := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "widgets-system"}}}
	raw, err := dep.MarshalJSON()
	require.NoError(t, err)
	p.Spec.Dependencies = []v1alpha1.Dependency{{RawExtension: runtime.RawExtension{Raw: raw}}}
	p.Spec.Workflows.Promise.Configure = []v1alpha1.Pipeline{pipeline("setup", "promise-cm")}
	e.create(p)
	got := e.waitPromiseReady(p.Name)
	require.Equal(t, []string{"dev-" + e.id, "prod-" + e.id}, got.Status.Destinations)
	for _, dest := range []string{"dev", "prod"} {
		files := e.filesUnder(dest + "/dependencies/" + p.Name)
		require.Contains(t, files["dependencies.yaml"], "widgets-system")
		require.Contains(t, files["setup/shared.yaml"], "shared-"+p.Name)
	}

	req := e.request("keep", "x")
	e.create(req)
	e.waitRequest(req, "Ready", "True")

	// Deleting the promise waits for its requests, and says so.
	require.NoError(t, k8s.Delete(e.ctx(), got))
	require.Eventually(t, func() bool {
		cur := &v1alpha1.Promise{}
		if err := k8s.Get(e.ctx(), client.ObjectKey{Name: p.Name}, cur); err != nil {
			return false
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == "Ready" && c.Reason == "WaitingForRequests" && strings.Contains(c.Message, "1 Widget request(s)") {
				return true
			}
		}
		return false
	}, 60*time.Second, 50*time.Millisecond)
	crd := &apiextensionsv1.CustomResourceDefinition{}
	require.NoError(t, k8s.Get(e.ctx(), client.ObjectKey{Name: "widgets." + e.id + ".test.promised.dev"}, crd), "the API stays while requests remain")

	// Once the last request is gone, the promise, its output and its API go.
	require.NoError(t, k8s.Delete(e.ctx(), req))
	require.Eventually(t, func() bool {
		err := k8s.Get(e.ctx(), client.ObjectKey{Name: p.Name}, &v1alpha1.Promise{})
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		err := k8s.Get(e.ctx(), client.ObjectKey{Name: crd.Name}, &apiextensionsv1.CustomResourceDefinition{})
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 50*time.Millisecond)
	require.Empty(t, e.filesUnder("dev/dependencies/"+p.Name))
	require.Empty(t, e.filesUnder("prod/dependencies/"+p.Name))
	require.Empty(t, e.filesUnder("dev/resources"))
}

func TestBadPromises(t *testing.T) {
	e := newEnv(t)
	notCRD := e.promise("notcrd")
	notCRD.Spec.API = &runtime.RawExtension{Raw: []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}`)}
	e.create(notCRD)

	first := e.promise("first", pipeline("render", "cm"))
	e.create(first)
	e.waitPromiseReady(first.Name)
	second := e.promise("second", pipeline("render", "cm"))
	e.create(second)

	for name, want := range map[string]string{
		notCRD.Name: "want apiextensions.k8s.io/v1 CustomResourceDefinition",
		second.Name: `already served by promise "` + first.Name + `"`,
	} {
		require.Eventually(t, func() bool {
			p := &v1alpha1.Promise{}
			if err := k8s.Get(e.ctx(), client.ObjectKey{Name: name}, p); err != nil {
				return false
			}
			for _, c := range p.Status.Conditions {
				if c.Type == "APIInstalled" && c.Status == "False" && strings.Contains(c.Message, want) {
					return true
				}
			}
			return false
		}, 60*time.Second, 50*time.Millisecond, "promise %s: want APIInstalled=False with %q", name, want)
	}
}

func TestUnreachableStoreIsReportedAndRecovers(t *testing.T) {
	e := newEnv(t)
	// Break the store's credentials before anything uses them.
	sec := &corev1.Secret{}
	require.NoError(t, k8s.Get(e.ctx(), client.ObjectKey{Namespace: "default", Name: "git-" + e.id}, sec))
	sec.Data["password"] = []byte("wrong")
	require.NoError(t, k8s.Update(e.ctx(), sec))

	d := e.destination("dev", nil)
	p := e.promise("widgets", pipeline("render", "cm"))
	e.create(p)
	e.waitPromiseReady(p.Name) // no dependencies: nothing to write yet
	req := e.request("waits", "x")
	e.create(req)

	got := e.waitRequest(req, "Written", "False")
	msg := fmt.Sprint(requestCondition(got, "Written")["message"])
	require.Contains(t, msg, `GitStateStore "`+e.store+`"`)
	require.NotContains(t, msg, "wrong", "the password never appears in status")
	require.Eventually(t, func() bool {
		cur := &v1alpha1.Destination{}
		return k8s.Get(e.ctx(), client.ObjectKeyFromObject(d), cur) == nil && condStatus(cur.Status.Conditions, "Ready") == "False"
	}, 60*time.Second, 50*time.Millisecond, "the destination reports its store unreachable")
	require.Empty(t, e.files(), "nothing was written")

	// Fixing the Secret is enough: the request is written on its next try.
	sec.Data["password"] = []byte(e.git.Password())
	require.NoError(t, k8s.Update(e.ctx(), sec))
	e.waitRequest(req, "Ready", "True")
	require.NotEmpty(t, e.filesUnder(requestDir("dev", "default", p.Name, req.GetName())))
}

func TestSecretsAreSealedForTheirDestinationAndStayPut(t *testing.T) {
	e := newEnv(t)
	devKey, err := sealtest.NewKey(2048)
	require.NoError(t, err)
	prodKey, err := sealtest.NewKey(2048)
	require.NoError(t, err)
	for name, k := range map[string]sealtest.Key{"dev": devKey, "prod": prodKey} {
		d := &v1alpha1.Destination{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + e.id, Labels: map[string]string{"test": e.id, "env": name}},
			Spec: v1alpha1.DestinationSpec{StateStoreRef: v1alpha1.StateStoreRef{Kind: "GitStateStore", Name: e.store}, Path: name,
				Sealing: &v1alpha1.Sealing{CertificatePEM: string(k.CertPEM)}}}
		e.create(d)
	}
	p := e.promise("creds", pipeline("mint", "secret", seal.StageName))
	e.create(p)
	e.waitPromiseReady(p.Name)

	const password = "correct-horse-battery"
	req := e.request("app", password)
	e.create(req)
	e.waitRequest(req, "Ready", "True")

	// The pipeline chose env=prod: the secret is sealed for prod's key,
	// whichever destination the platform first guessed.
	files := e.filesUnder(requestDir("prod", "default", p.Name, req.GetName()))
	manifest := files["mint/secret.yaml"]
	require.Contains(t, manifest, "kind: SealedSecret")
	data, err := prodKey.Unseal([]byte(manifest))
	require.NoError(t, err)
	require.Equal(t, password, string(data["password"]))
	_, err = devKey.Unseal([]byte(manifest))
	require.Error(t, err, "dev's key cannot open prod's secret")
	for path, content := range e.files() {
		require.NotContains(t, content, password, "plaintext in %s", path)
	}

	// Re-runs with unchanged input re-emit the same sealed bytes: no commit.
	commits := e.commits()
	for i := range 5 {
		got, err := e.get(req)
		require.NoError(t, err)
		runs := runCount("default", req.GetName(), contract.ActionConfigure)
		got.SetAnnotations(map[string]string{"promised.dev/reconcile-at": fmt.Sprint(i)})
		require.NoError(t, k8s.Update(e.ctx(), got))
		require.Eventually(t, func() bool { return runCount("default", req.GetName(), contract.ActionConfigure) > runs }, 30*time.Second, 20*time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, commits, e.commits(), "re-running with unchanged input must not commit")
	require.Equal(t, manifest, e.filesUnder(requestDir("prod", "default", p.Name, req.GetName()))["mint/secret.yaml"])
}

func TestStagesSeeOnlyPlatformSecretsAndRequests(t *testing.T) {
	e := newEnv(t)
	e.destination("dev", nil)
	p := e.promise("peek", pipeline("peek", "peek"))
	e.create(p)
	e.waitPromiseReady(p.Name)
	labelled := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "config-" + e.id, Namespace: "default", Labels: map[string]string{"promised.dev/platform-config": "true"}},
		Data: map[string][]byte{"dsn": []byte("postgres://admin:s3cret@db/postgres")}}
	unlabelled := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "private-" + e.id, Namespace: "default"},
		Data: map[string][]byte{"token": []byte("do-not-read")}}
	e.create(labelled)
	e.create(unlabelled)

	for _, tc := range []struct {
		name, value, list string
		ok                bool
		want              string
	}{
		{"labelled", "default/" + labelled.Name, "", true, ""},
		{"unlabelled", "default/" + unlabelled.Name, "", false, "is not labelled promised.dev/platform-config=true"},
		{"requests", "", "Widget", true, ""},
		{"configmaps", "", "ConfigMap", false, "is not served by any promise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := e.request(tc.name, tc.value)
			req.Object["spec"] = map[string]any{"value": tc.value, "list": tc.list}
			e.create(req)
			if tc.ok {
				got := e.waitRequest(req, "Ready", "True")
				status, _, _ := unstructured.NestedMap(got.Object, "status")
				require.True(t, status["secretKeys"] != nil || status["listed"] != nil, "the stage reported what it saw: %v", status)
				return
			}
			got := e.waitRequest(req, "PipelineSucceeded", "False")
			msg := fmt.Sprint(requestCondition(got, "PipelineSucceeded")["message"])
			require.Contains(t, msg, tc.want)
			require.NotContains(t, msg, "do-not-read")
		})
	}
}

func TestPlatformKeyIsCreatedOnceAndKept(t *testing.T) {
	ns := "key-test"
	require.NoError(t, k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	first, err := controller.PlatformKeyFromSecret(context.Background(), k8s, ns)
	require.NoError(t, err)
	require.Len(t, first, 32)
	second, err := controller.PlatformKeyFromSecret(context.Background(), k8s, ns)
	require.NoError(t, err)
	require.Equal(t, first, second, "every replica and every restart uses the same key")

	sec := &corev1.Secret{}
	require.NoError(t, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controller.PlatformKeySecret}, sec))
	sec.Data["key"] = []byte("short")
	require.NoError(t, k8s.Update(context.Background(), sec))
	_, err = controller.PlatformKeyFromSecret(context.Background(), k8s, ns)
	require.ErrorContains(t, err, "at least 32")
}

func TestGitOutageAndForeignCommits(t *testing.T) {
	e := newEnv(t)
	e.destination("dev", nil)
	p := e.promise("widgets", pipeline("render", "cm"))
	e.create(p)
	e.waitPromiseReady(p.Name)
	first := e.request("before", "x")
	e.create(first)
	e.waitRequest(first, "Ready", "True")

	// A foreign commit lands on the branch between our writes: it is kept.
	e.git.PushFile(e.repo, "main", "README.md", "written by someone else\n")

	// The Git server goes down for 30 s while requests arrive.
	e.git.StopHTTP()
	down := time.Now()
	var reqs []*unstructured.Unstructured
	for i := range 3 {
		req := e.request(fmt.Sprintf("during-%d", i), "y")
		e.create(req)
		reqs = append(reqs, req)
	}
	got := e.waitRequest(reqs[0], "Written", "False")
	msg := fmt.Sprint(requestCondition(got, "Written")["message"])
	require.Contains(t, msg, `GitStateStore "`+e.store+`"`)
	t.Logf("after %s down, the status says: %s", time.Since(down).Round(time.Second), msg)
	time.Sleep(30*time.Second - time.Since(down))
	e.git.StartHTTP()
	up := time.Now()
	for _, req := range reqs {
		e.waitRequest(req, "Ready", "True")
	}
	t.Logf("Git down for 30s: all %d requests written %s after it came back", len(reqs), time.Since(up).Round(time.Millisecond))

	files := e.files()
	require.Equal(t, "written by someone else\n", files["README.md"], "the foreign commit survived")
	for _, req := range append(reqs, first) {
		require.NotEmpty(t, e.filesUnder(requestDir("dev", "default", p.Name, req.GetName())), req.GetName())
	}
}
