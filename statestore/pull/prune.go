package pull

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// holdPrune keeps every inventory entry that is not in the folder, without
// deleting anything.
func (r *run) holdPrune(why string) {
	desired := r.desiredKeys()
	held := 0
	for k, e := range r.inv.entries {
		if !desired[k] {
			r.carried[k] = e
			held++
		}
	}
	if held > 0 {
		r.notes = append(r.notes, fmt.Sprintf("prune held back for %d object(s): %s", held, why))
	}
}

func (r *run) desiredKeys() map[string]bool {
	keys := map[string]bool{}
	for _, it := range r.items {
		keys[it.ref.key()] = true
	}
	return keys
}

// prune deletes what the inventory lists and the folder no longer holds,
// when sync created it: CRDs last, because deleting a CRD deletes every
// object of its kind, and namespaces after what lives in them.
func (r *run) prune(ctx context.Context) {
	if n := len(r.parseFailures); n > 0 {
		r.holdPrune(fmt.Sprintf("%d document(s) could not be read, so what left the folder is not known", n))
		return
	}
	desired := r.desiredKeys()
	var gone []inventoryEntry
	for k, e := range r.inv.entries {
		switch {
		case desired[k]:
		case r.unmapped[e.GroupKind()]:
			// An object of this kind in the folder could not be mapped, so
			// its namespace (and so its identity) is not settled: it may be
			// this very entry.
			r.carried[k] = e
		default:
			gone = append(gone, e)
		}
	}
	sort.Slice(gone, func(i, j int) bool {
		pi, pj := phaseOf(gone[i].GroupKind()), phaseOf(gone[j].GroupKind())
		if pi != pj {
			return pi > pj
		}
		return gone[i].key() < gone[j].key()
	})
	for _, e := range gone {
		res, keep := r.pruneOne(ctx, e)
		if keep {
			r.carried[e.key()] = e
		}
		r.pruned = append(r.pruned, res)
		lg := r.a.log.V(1).WithValues("object", e.ObjectRef.String(), "action", res.Action)
		if res.Reason != "" {
			lg = lg.WithValues("reason", res.Reason)
		}
		lg.Info("pruned object")
	}
}

// pruneOne deletes one object if sync created it. keep says whether its
// inventory entry stays (the delete failed and is tried on the next sync).
func (r *run) pruneOne(ctx context.Context, e inventoryEntry) (res ObjectResult, keep bool) {
	res = ObjectResult{Object: e.ObjectRef, Action: ActionPruned}
	gv, err := schema.ParseGroupVersion(e.APIVersion)
	if err != nil {
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("inventory entry has apiVersion %q: %v", e.APIVersion, err)
		return res, true
	}
	mapping, err := r.a.mapper.RESTMapping(e.GroupKind(), gv.Version)
	if meta.IsNoMatchError(err) {
		// No such kind is served: no such object can exist.
		res.Reason = "already gone (its kind is no longer served)"
		return res, false
	}
	if err != nil {
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("finding the resource of %s: %v", e.GroupKind(), err)
		return res, true
	}
	var ri dynamic.ResourceInterface = r.a.dyn.Resource(mapping.Resource)
	if e.Namespace != "" {
		ri = r.a.dyn.Resource(mapping.Resource).Namespace(e.Namespace)
	}
	var live *unstructured.Unstructured
	err = r.retry(ctx, func() error {
		var err error
		live, err = ri.Get(ctx, e.Name, metav1.GetOptions{})
		return err
	})
	switch {
	case apierrors.IsNotFound(err):
		res.Reason = "already gone"
		return res, false
	case err != nil:
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("reading the live object: %v", err)
		return res, true
	}
	if reason := notOurs(e, live); reason != "" {
		res.Action, res.Reason = ActionKept, reason
		return res, false
	}
	if live.GetDeletionTimestamp() != nil {
		res.Reason = "already being deleted"
		return res, false
	}
	blocker, err := r.cascadeBlocker(ctx, e, live)
	switch {
	case err != nil:
		res.Action, res.Reason = ActionFailed, err.Error()
		return res, true
	case blocker != "":
		// Still sync's: tracked, and pruned by a later sync once it
		// holds only what sync created.
		res.Action, res.Reason = ActionKept, "not deleted yet: deleting it would delete "+blocker+", which sync did not create"
		return res, true
	}
	// The UID precondition makes the check above and the delete one step:
	// an object re-created in between is not deleted.
	uid := live.GetUID()
	background := metav1.DeletePropagationBackground
	err = r.retry(ctx, func() error {
		return ri.Delete(ctx, e.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &background})
	})
	switch {
	case err == nil:
		return res, false
	case apierrors.IsNotFound(err):
		res.Reason = "already gone"
		return res, false
	case apierrors.IsConflict(err):
		res.Action, res.Reason = ActionKept, "re-created outside sync while it was being pruned"
		return res, false
	default:
		res.Action, res.Reason = ActionFailed, fmt.Sprintf("deleting: %v", err)
		return res, true
	}
}

// notOurs says why prune must leave live alone, or "" when sync created it
// and still manages it.
func notOurs(e inventoryEntry, live *unstructured.Unstructured) string {
	switch {
	case e.UID == "":
		return "not deleted: it existed before sync first applied it"
	case live.GetUID() != e.UID:
		return "not deleted: it was re-created outside sync (its UID changed)"
	case live.GetLabels()[LabelManagedBy] != ManagedBy:
		return "not deleted: its " + LabelManagedBy + "=" + ManagedBy + " label was removed"
	}
	return ""
}

// nextInventory is what the inventory lists after this sync: every object
// of the folder that is in the cluster, objects of the folder that failed
// but were created before (so a later removal still prunes them), and
// entries whose prune failed or was held back.
func (r *run) nextInventory() map[string]inventoryEntry {
	next := map[string]inventoryEntry{}
	for k, e := range r.carried {
		next[k] = e
	}
	for _, it := range r.items {
		if it.duplicate {
			continue
		}
		key := it.ref.key()
		old, had := r.inv.entries[key]
		if !it.mapped || !it.exists {
			if had {
				next[key] = old
			}
			continue
		}
		e := inventoryEntry{ObjectRef: it.ref}
		switch {
		case it.created:
			e.UID = it.uid
		case had && old.UID != "" && old.UID == it.uidBefore:
			e.UID = it.uid
		}
		// Otherwise the object existed before sync applied it, or was
		// re-created by someone else: sync manages it but will not delete it.
		next[key] = e
	}
	return next
}
