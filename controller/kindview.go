package controller

import (
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// kindView is one request kind's objects in namespace and name order, kept
// up to date by the kind's informer.
//
// A stage that reads every request of a kind (each ApiAggregatorTarget run
// reads every target) would otherwise list the cache and sort it on every
// run, reading each object's namespace and name from its nested maps: at
// 2,500 targets that was a tenth of the controller's CPU. The view sorts
// once per added object instead, and a listing is a copy of the order.
// It trails the informer's cache by the delivery of an event, as every
// informer-driven reader does.
type kindView struct {
	informer cache.Informer
	reg      toolscache.ResourceEventHandlerRegistration

	mu   sync.RWMutex
	keys []types.NamespacedName // sorted by namespace, then name
	objs map[types.NamespacedName]*unstructured.Unstructured
}

// watchKind starts a view fed by informer.
func watchKind(informer cache.Informer) (*kindView, error) {
	v := &kindView{informer: informer, objs: map[types.NamespacedName]*unstructured.Unstructured{}}
	reg, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    v.put,
		UpdateFunc: func(_, obj any) { v.put(obj) },
		DeleteFunc: v.remove,
	})
	if err != nil {
		return nil, err
	}
	v.reg = reg
	return v, nil
}

// stop detaches the view from its informer.
func (v *kindView) stop() {
	_ = v.informer.RemoveEventHandler(v.reg)
}

func compareKeys(a, b types.NamespacedName) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// objectOf returns an event's object and its key; a deletion's final
// state may come as a tombstone.
func objectOf(obj any) (*unstructured.Unstructured, types.NamespacedName, bool) {
	if gone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = gone.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, types.NamespacedName{}, false
	}
	return u, types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}, true
}

func (v *kindView) put(obj any) {
	u, key, ok := objectOf(obj)
	if !ok {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, known := v.objs[key]; !known {
		i, _ := slices.BinarySearchFunc(v.keys, key, compareKeys)
		v.keys = slices.Insert(v.keys, i, key)
	}
	v.objs[key] = u
}

func (v *kindView) remove(obj any) {
	_, key, ok := objectOf(obj)
	if !ok {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.objs, key)
	if i, found := slices.BinarySearchFunc(v.keys, key, compareKeys); found {
		v.keys = slices.Delete(v.keys, i, i+1)
	}
}

// list returns the objects in order, shared with the informer's cache
// (stage.Objects lets stages only read them). ok is false until the view
// has received the informer's initial listing.
func (v *kindView) list() (items []unstructured.Unstructured, ok bool) {
	if !v.reg.HasSynced() {
		return nil, false
	}
	return v.snapshot(), true
}

func (v *kindView) snapshot() []unstructured.Unstructured {
	v.mu.RLock()
	defer v.mu.RUnlock()
	items := make([]unstructured.Unstructured, len(v.keys))
	for i, k := range v.keys {
		items[i] = *v.objs[k]
	}
	return items
}
