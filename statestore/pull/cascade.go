package pull

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
)

// Deleting a CRD deletes every object of its kind, and deleting a
// namespace deletes everything in it. Prune deletes a CRD or a namespace
// that sync created only when nothing sync did not create would go with
// it: a developer's workload in a namespace a promise once placed must not
// disappear because the namespace left the folder.

// skippedInNamespace are resources a namespace scan ignores: events are
// records, not state, and core Endpoints mirror Services (which are
// scanned) without pointing at them.
var skippedInNamespace = map[schema.GroupResource]bool{
	{Resource: "events"}:                         true,
	{Group: "events.k8s.io", Resource: "events"}: true,
	{Resource: "endpoints"}:                      true,
}

// createdInEveryNamespace are made by Kubernetes itself in each namespace.
var createdInEveryNamespace = map[string]bool{
	"ConfigMap/kube-root-ca.crt": true,
	"ServiceAccount/default":     true,
}

// cascadeBlocker names an object that deleting e (a CRD or a namespace)
// would delete although sync did not create it, or returns "".
func (r *run) cascadeBlocker(ctx context.Context, e inventoryEntry, live *unstructured.Unstructured) (string, error) {
	switch e.GroupKind() {
	case crdKind:
		return r.crdBlocker(ctx, live)
	case namespaceKind:
		return r.namespaceBlocker(ctx, e.Name)
	}
	return "", nil
}

// ours is every object sync created, by UID: those in the inventory and
// those created in this sync.
func (r *run) ours() map[types.UID]bool {
	uids := map[types.UID]bool{}
	for _, e := range r.inv.entries {
		if e.UID != "" {
			uids[e.UID] = true
		}
	}
	for _, it := range r.items {
		if it.created {
			uids[it.uid] = true
		}
	}
	return uids
}

// foreign says whether o would be lost with its CRD or namespace although
// sync did not create it. An object with an owner is a dependent (a Pod
// of a ReplicaSet): whether it matters is decided by its owner, which is
// scanned too.
func foreign(o *unstructured.Unstructured, ours map[types.UID]bool) bool {
	return o.GetDeletionTimestamp() == nil && !ours[o.GetUID()] && len(o.GetOwnerReferences()) == 0 &&
		!createdInEveryNamespace[o.GetKind()+"/"+o.GetName()]
}

func (r *run) crdBlocker(ctx context.Context, crd *unstructured.Unstructured) (string, error) {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	version := ""
	for _, v := range versions {
		m, _ := v.(map[string]any)
		if served, _ := m["served"].(bool); served {
			version, _ = m["name"].(string)
			break
		}
	}
	if version == "" || plural == "" {
		return "", nil // nothing is served, so nothing can be lost
	}
	gvr := schema.GroupVersionResource{Group: group, Version: version, Resource: plural}
	return firstForeign(ctx, r.a.dyn.Resource(gvr), r.ours())
}

func (r *run) namespaceBlocker(ctx context.Context, ns string) (string, error) {
	lists, err := discovery.ServerPreferredNamespacedResources(r.a.discovery)
	if err != nil && len(lists) == 0 {
		return "", fmt.Errorf("listing the kinds a namespace can hold: %w", err)
	}
	// A partial discovery failure (one aggregated API down) still lists
	// the rest; an object of the missing API could be lost, so refuse.
	if err != nil {
		return "", fmt.Errorf("listing the kinds a namespace can hold (partly failed, so the namespace cannot be checked): %w", err)
	}
	ours := r.ours()
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		for _, res := range list.APIResources {
			gr := schema.GroupResource{Group: gv.Group, Resource: res.Name}
			if strings.Contains(res.Name, "/") || skippedInNamespace[gr] || !hasVerb(res.Verbs, "list") {
				continue
			}
			found, err := firstForeign(ctx, r.a.dyn.Resource(gv.WithResource(res.Name)).Namespace(ns), ours)
			if err != nil || found != "" {
				return found, err
			}
		}
	}
	return "", nil
}

// firstForeign pages through a list and names the first foreign object.
func firstForeign(ctx context.Context, ri dynamic.ResourceInterface, ours map[types.UID]bool) (string, error) {
	opts := metav1.ListOptions{Limit: 250}
	for {
		list, err := ri.List(ctx, opts)
		if meta.IsNoMatchError(err) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("checking what it holds: %w", err)
		}
		for i := range list.Items {
			if o := &list.Items[i]; foreign(o, ours) {
				ref := ObjectRef{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()}
				return ref.String(), nil
			}
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return "", nil
		}
	}
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}
