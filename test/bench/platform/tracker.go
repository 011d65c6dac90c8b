package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"promised.dev/promised/test/liveplatform"
)

// reqState is what the benchmark sees of one request.
type reqState struct {
	ready  bool
	digest string
	commit string
	obj    *unstructured.Unstructured
}

// tracker watches requests with informers (one watch per kind, no
// polling) and records the moment each one first meets a goal.
type tracker struct {
	mu     sync.Mutex
	state  map[string]*reqState
	goals  []*goal
	cancel context.CancelFunc
}

// goal is a condition every one of a set of requests must meet.
type goal struct {
	pred    func(key string, s *reqState) bool
	pending map[string]bool
	met     map[string]time.Time
	done    chan struct{}
}

func key(gvr schema.GroupVersionResource, ns, name string) string {
	return gvr.Resource + "/" + ns + "/" + name
}

// newTracker starts informers on every gvr and waits for their first
// list.
func newTracker(ctx context.Context, dyn dynamic.Interface, gvrs []schema.GroupVersionResource) (*tracker, error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &tracker{state: map[string]*reqState{}, cancel: cancel}
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	for _, gvr := range gvrs {
		inf := f.ForResource(gvr).Informer()
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { t.observe(gvr, o) },
			UpdateFunc: func(_, o any) { t.observe(gvr, o) },
			DeleteFunc: func(o any) { t.forget(gvr, o) },
		})
		if err != nil {
			cancel()
			return nil, err
		}
	}
	f.Start(ctx.Done())
	for gvr, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			return nil, fmt.Errorf("the informer of %s did not sync", gvr)
		}
	}
	return t, nil
}

func (t *tracker) stop() { t.cancel() }

func (t *tracker) observe(gvr schema.GroupVersionResource, o any) {
	now := time.Now()
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	k := key(gvr, u.GetNamespace(), u.GetName())
	s := &reqState{ready: liveplatform.RequestReady(u), obj: u}
	s.digest, _, _ = unstructured.NestedString(u.Object, "status", "outputDigest")
	s.commit, _, _ = unstructured.NestedString(u.Object, "status", "commit")
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state[k] = s
	for _, g := range t.goals {
		g.check(k, s, now)
	}
}

func (t *tracker) forget(gvr schema.GroupVersionResource, o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.state, key(gvr, u.GetNamespace(), u.GetName()))
}

func (g *goal) check(k string, s *reqState, now time.Time) {
	if !g.pending[k] || !g.pred(k, s) {
		return
	}
	delete(g.pending, k)
	g.met[k] = now
	if len(g.pending) == 0 {
		close(g.done)
	}
}

// expect registers a goal for keys, checked at once against what is
// already known and then on every event.
func (t *tracker) expect(keys []string, pred func(key string, s *reqState) bool) *goal {
	g := &goal{pred: pred, pending: map[string]bool{}, met: map[string]time.Time{}, done: make(chan struct{})}
	for _, k := range keys {
		g.pending[k] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(keys) == 0 {
		close(g.done)
		return g
	}
	now := time.Now()
	for _, k := range keys {
		if s, ok := t.state[k]; ok {
			g.check(k, s, now)
		}
	}
	t.goals = append(t.goals, g)
	return g
}

// wait blocks until the goal is met by every key, ctx ends or timeout
// passes; on timeout it says how many are missing and shows one.
func (t *tracker) wait(ctx context.Context, g *goal, timeout time.Duration, alive func() error) (map[string]time.Time, error) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		select {
		case <-g.done:
			t.drop(g)
			return g.met, nil
		case <-ctx.Done():
			t.drop(g)
			return nil, ctx.Err()
		case <-deadline:
			t.drop(g)
			return nil, t.missing(g, timeout)
		case <-tick.C:
			if err := alive(); err != nil {
				t.drop(g)
				return nil, err
			}
		}
	}
}

func (t *tracker) drop(g *goal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, x := range t.goals {
		if x == g {
			t.goals = append(t.goals[:i], t.goals[i+1:]...)
			return
		}
	}
}

func (t *tracker) missing(g *goal, timeout time.Duration) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var example string
	for k := range g.pending {
		example = k
		if s, ok := t.state[k]; ok {
			conds, _, _ := unstructured.NestedSlice(s.obj.Object, "status", "conditions")
			example = fmt.Sprintf("%s (conditions: %v)", k, conds)
		}
		break
	}
	return fmt.Errorf("%d of %d requests did not get there within %s, e.g. %s", len(g.pending), len(g.pending)+len(g.met), timeout, example)
}

// snapshot returns a copy of the known state of keys.
func (t *tracker) snapshot(keys []string) map[string]reqState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]reqState, len(keys))
	for _, k := range keys {
		if s, ok := t.state[k]; ok {
			out[k] = *s
		}
	}
	return out
}
