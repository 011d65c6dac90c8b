package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/seal"
	"promised.dev/promised/pipelines/stage"
	"promised.dev/promised/statestore"
	"promised.dev/promised/statestore/gitserver"
	"promised.dev/promised/test/liveplatform"
)

// ceilingGroup is the group prefix of the ceiling's CRD copies, served by
// no promise, so no controller watches them.
const ceilingGroup = "ceiling."

// apiCeiling creates the same objects as the run, under copies of the
// promises' CRDs that no promise serves, and patches each one's status to
// the status the controller wrote for its twin, with the same number of
// concurrent clients: what the apiserver alone takes for the run's object
// writes.
func (p *platform) apiCeiling(ctx context.Context, concurrency int, reqs []planned, final map[string]reqState) (time.Duration, error) {
	gvrs := map[schema.GroupVersionResource]schema.GroupVersionResource{}
	for _, r := range reqs {
		if _, ok := gvrs[r.w.gvr]; ok {
			continue
		}
		twin, err := p.ceilingCRD(ctx, r.w.gvr)
		if err != nil {
			return 0, err
		}
		gvrs[r.w.gvr] = twin
	}
	work := make(chan planned, len(reqs))
	for _, r := range reqs {
		work <- r
	}
	close(work)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for r := range work {
				twin := gvrs[r.w.gvr]
				u := r.obj.DeepCopy()
				u.SetAPIVersion(twin.GroupVersion().String())
				res := p.Dynamic.Resource(twin).Namespace(u.GetNamespace())
				_, err := res.Create(ctx, u, metav1.CreateOptions{})
				if err == nil {
					status := final[r.key].obj.Object["status"]
					var patch []byte
					if patch, err = json.Marshal(map[string]any{"status": status}); err == nil {
						_, err = res.Patch(ctx, u.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}, "status")
					}
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("ceiling object %s/%s: %w", u.GetNamespace(), u.GetName(), err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), first
}

// ceilingCRD installs a copy of gvr's CRD in another group and waits
// until it is served.
func (p *platform) ceilingCRD(ctx context.Context, gvr schema.GroupVersionResource) (schema.GroupVersionResource, error) {
	src := &apiextensionsv1.CustomResourceDefinition{}
	if err := p.Client.Get(ctx, client.ObjectKey{Name: gvr.Resource + "." + gvr.Group}, src); err != nil {
		return gvr, err
	}
	twin := gvr
	twin.Group = ceilingGroup + gvr.Group
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: twin.Resource + "." + twin.Group},
		Spec:       *src.Spec.DeepCopy(),
	}
	crd.Spec.Group = twin.Group
	if err := p.Client.Create(ctx, crd); err != nil {
		return gvr, err
	}
	err := p.Poll(ctx, time.Minute, 50*time.Millisecond, "CRD "+crd.Name+" Established", func() (bool, error) {
		got := &apiextensionsv1.CustomResourceDefinition{}
		if err := p.Client.Get(ctx, client.ObjectKey{Name: crd.Name}, got); err != nil {
			return false, nil
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return gvr, err
	}
	// Established can precede the discovery and REST storage being ready.
	return twin, p.Poll(ctx, time.Minute, 50*time.Millisecond, crd.Name+" served", func() (bool, error) {
		_, err := p.Dynamic.Resource(twin).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
}

// gitCeiling renders every request's output in-process with the same
// engine and stages (the ytt renders and sealing included; reported
// separately), then writes them, one Write per request from callers
// concurrent callers, to a fresh repository on the same Git server with
// the state store's writer alone: what the Git side of the run costs
// without the controller around it.
func (p *platform) gitCeiling(ctx context.Context, callers int, reqs []planned, final map[string]reqState) (render, write time.Duration, commits int, err error) {
	reg, err := builtin.Registry()
	if err != nil {
		return 0, 0, 0, err
	}
	led, err := ledger.NewFolder(filepath.Join(p.Work, "ceiling-ledger"))
	if err != nil {
		return 0, 0, 0, err
	}
	engine, err := local.NewEngine(local.Options{Registry: reg, Runtime: local.RuntimeInProcess, Ledger: led,
		Objects: newDynObjects(p), Secrets: clusterSecrets{p}})
	if err != nil {
		return 0, 0, 0, err
	}
	promises := map[string]*v1alpha1.Promise{}
	for _, r := range reqs {
		if _, ok := promises[r.w.promise.Name]; ok {
			continue
		}
		pr := &v1alpha1.Promise{}
		if err := p.Client.Get(ctx, client.ObjectKey{Name: r.w.promise.Name}, pr); err != nil {
			return 0, 0, 0, err
		}
		promises[pr.Name] = pr
	}
	platformKey := make([]byte, 32)
	if _, err := rand.Read(platformKey); err != nil {
		return 0, 0, 0, err
	}

	changes := make([]statestore.Change, len(reqs))
	errs := make([]error, len(reqs))
	idx := make(chan int, len(reqs))
	for i := range reqs {
		idx <- i
	}
	close(idx)
	start := time.Now()
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range idx {
				changes[i], errs[i] = p.renderOne(ctx, engine, promises[reqs[i].w.promise.Name], final[reqs[i].key], platformKey)
			}
		})
	}
	wg.Wait()
	render = time.Since(start)
	for _, e := range errs {
		if e != nil {
			return render, 0, 0, e
		}
	}

	const repo = "ceiling.git"
	if _, err := gitserver.InitBare(p.GitBin, p.GitRoot, repo); err != nil {
		return render, 0, 0, err
	}
	w, err := statestore.NewGit(ctx, statestore.GitConfig{URL: p.GitServer.URL(repo), Branch: "main",
		Basic: &statestore.BasicAuth{Username: liveplatform.GitUser, Password: p.GitPassword}, Path: filepath.Join(p.Work, "ceiling-clone")})
	if err != nil {
		return render, 0, 0, err
	}
	defer w.Close()
	work := make(chan statestore.Change, len(changes))
	for _, c := range changes {
		work <- c
	}
	close(work)
	var mu sync.Mutex
	var first error
	start = time.Now()
	for range callers {
		wg.Go(func() {
			for c := range work {
				if _, err := w.Write(ctx, c); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	write = time.Since(start)
	if first != nil {
		return render, write, 0, first
	}
	commits, err = p.CommitCount(repo)
	return render, write, commits, err
}

// renderOne runs a request's configure workflow as the controller would
// for the destination it was placed on, and returns the state-store change
// the controller would write.
func (p *platform) renderOne(ctx context.Context, e *pipelines.Engine, pr *v1alpha1.Promise, st reqState, platformKey []byte) (statestore.Change, error) {
	obj := st.obj
	dests, _, _ := unstructured.NestedStringSlice(obj.Object, "status", "destinations")
	if len(dests) == 0 {
		return statestore.Change{}, fmt.Errorf("%s/%s has no destination in its status", obj.GetNamespace(), obj.GetName())
	}
	dest := dests[0]
	fpKey, err := seal.DeriveFingerprintKey(platformKey, pr.Name, obj.GetNamespace(), obj.GetName())
	if err != nil {
		return statestore.Change{}, err
	}
	inputs, err := seal.Inputs(p.Keys[dest].CertPEM, "", fpKey)
	if err != nil {
		return statestore.Change{}, err
	}
	res, err := e.Run(ctx, pipelines.Workflow{
		PromiseName: pr.Name, Type: contract.TypeResource, Action: contract.ActionConfigure,
		Pipelines: pr.Spec.Workflows.Resource.Configure, Object: obj, Inputs: inputs,
	})
	if err != nil {
		return statestore.Change{}, err
	}
	dir, err := statestore.ResourceDir("", dest, obj.GetNamespace(), pr.Name, obj.GetName())
	if err != nil {
		return statestore.Change{}, err
	}
	return statestore.OutputChange(dir, statestore.Filepath{}, res.Files())
}

// dynObjects serves stage.Objects from the apiserver, listing each kind
// once: nothing changes while the ceiling renders (the controller serves
// them from its cache).
type dynObjects struct {
	p     *platform
	mu    *sync.Mutex
	lists map[string][]unstructured.Unstructured
}

func newDynObjects(p *platform) dynObjects {
	return dynObjects{p: p, mu: &sync.Mutex{}, lists: map[string][]unstructured.Unstructured{}}
}

func (d dynObjects) List(ctx context.Context, apiVersion, kind string) ([]unstructured.Unstructured, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := apiVersion + "/" + kind
	items, ok := d.lists[k]
	if !ok {
		var err error
		if items, err = d.list(ctx, apiVersion, kind); err != nil {
			return nil, err
		}
		d.lists[k] = items
	}
	// Shared, as stage.Objects allows: the controller does not copy them
	// either.
	return items, nil
}

func (d dynObjects) list(ctx context.Context, apiVersion, kind string) ([]unstructured.Unstructured, error) {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(apiVersion)
	list.SetKind(kind + "List")
	if err := d.p.Client.List(ctx, list); err != nil {
		return nil, err
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.GetNamespace()+"/"+a.GetName() < b.GetNamespace()+"/"+b.GetName()
	})
	return list.Items, nil
}

// clusterSecrets serves labelled platform Secrets, as the controller does.
type clusterSecrets struct{ p *platform }

func (s clusterSecrets) Get(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	sec := &corev1.Secret{}
	if err := s.p.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec); err != nil {
		return nil, err
	}
	if sec.Labels[stage.LabelPlatformConfig] != "true" {
		return nil, fmt.Errorf("Secret %s/%s is not platform configuration", namespace, name)
	}
	return sec.Data, nil
}
