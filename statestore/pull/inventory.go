package pull

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

const (
	// DefaultInventoryNamespace holds sync's inventories, away from
	// anything the state store places, so a folder can never overwrite or
	// prune them.
	DefaultInventoryNamespace = "promised-system"
	// LabelManagedBy is set to ManagedBy on every object sync applies, so
	// `kubectl get -l promised.dev/managed-by=sync` lists them. Removing the
	// label opts an object out: prune leaves unlabelled objects alone.
	LabelManagedBy = "promised.dev/managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "sync"
	// LabelInventory marks the inventory ConfigMaps themselves.
	LabelInventory = "promised.dev/sync-inventory"
	// AnnotationDestination on an inventory names its destination as given
	// (the ConfigMap's name is a sanitised form of it).
	AnnotationDestination = "promised.dev/destination"

	inventoryKey = "objects"
)

// inventoryEntry is one object sync applied for a destination.
type inventoryEntry struct {
	ObjectRef
	// UID is set only when sync created the object. Prune deletes an
	// object only when its live UID equals this one: an object that
	// existed before sync first applied it (a namespace someone created by
	// hand), or that was deleted and re-created by someone else, has
	// another UID or none here, and is left alone.
	UID types.UID `json:"uid,omitempty"`
}

// inventory is what sync applied for a destination last time, read from
// its ConfigMap.
type inventory struct {
	name, namespace string
	// cm is the ConfigMap as read (its resourceVersion makes the update a
	// compare-and-swap); nil when there is none yet.
	cm      *corev1.ConfigMap
	entries map[string]inventoryEntry
}

// InventoryName returns the name of the ConfigMap that records what sync
// applied for destination. Destination names are free-form (a store path
// such as "platform/Dev"), ConfigMap names are not: the name is lowered
// and everything but letters, digits and '-' becomes '-' (dots too, since
// "a.-b" is not a valid name), and when that changed anything a hash of the
// original is added so that two destinations never share an inventory (they would
// prune each other's objects).
func InventoryName(destination string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(destination) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	clean := strings.Trim(b.String(), "-")
	const maxLen = 200 // well under 253, leaving room for the suffix
	if len(clean) > maxLen {
		clean = clean[:maxLen]
	}
	if clean != destination {
		sum := sha256.Sum256([]byte(destination))
		clean = strings.Trim(clean+"-"+hex.EncodeToString(sum[:4]), "-")
	}
	return "sync-" + clean
}

func loadInventory(ctx context.Context, kube kubernetes.Interface, namespace, name string) (*inventory, error) {
	inv := &inventory{name: name, namespace: namespace, entries: map[string]inventoryEntry{}}
	cm, err := kube.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return inv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading inventory ConfigMap %s/%s: %w", namespace, name, err)
	}
	inv.cm = cm
	if raw := cm.Data[inventoryKey]; raw != "" {
		var list []inventoryEntry
		if err := json.Unmarshal([]byte(raw), &list); err != nil {
			// Guessing would risk pruning the wrong objects; a person must
			// look at it.
			return nil, fmt.Errorf("inventory ConfigMap %s/%s: key %q is not valid: %w", namespace, name, inventoryKey, err)
		}
		for _, e := range list {
			inv.entries[e.key()] = e
		}
	}
	return inv, nil
}

// encodeEntries writes the entries sorted, one per line, so the ConfigMap
// is readable with kubectl and the same set always encodes the same way
// (an unchanged sync then makes no write).
func encodeEntries(entries map[string]inventoryEntry) (string, error) {
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("[")
	for i, k := range keys {
		line, err := json.Marshal(entries[k])
		if err != nil {
			return "", fmt.Errorf("encoding inventory entry %s: %w", entries[k].ObjectRef, err)
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n")
		b.Write(line)
	}
	b.WriteString("\n]\n")
	return b.String(), nil
}

// store writes entries when they differ from what was read. Creating the
// namespace and the ConfigMap happens on the first sync that has
// something to record; the update carries the resourceVersion read at the
// start, so two syncs of the same destination racing cannot silently drop
// each other's entries (the loser fails and its next run starts over).
func (inv *inventory) store(ctx context.Context, kube kubernetes.Interface, destination string, entries map[string]inventoryEntry) error {
	data, err := encodeEntries(entries)
	if err != nil {
		return err
	}
	if inv.cm != nil && inv.cm.Data[inventoryKey] == data {
		return nil
	}
	if inv.cm == nil && len(entries) == 0 {
		return nil
	}
	if inv.cm != nil {
		cm := inv.cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[inventoryKey] = data
		updated, err := kube.CoreV1().ConfigMaps(inv.namespace).Update(ctx, cm, metav1.UpdateOptions{FieldManager: DefaultFieldManager})
		if err != nil {
			return fmt.Errorf("updating inventory ConfigMap %s/%s: %w", inv.namespace, inv.name, err)
		}
		inv.cm = updated
		return nil
	}
	if err := ensureNamespace(ctx, kube, inv.namespace); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: inv.name, Namespace: inv.namespace,
			Labels:      map[string]string{LabelInventory: "true"},
			Annotations: map[string]string{AnnotationDestination: destination},
		},
		Data: map[string]string{inventoryKey: data},
	}
	created, err := kube.CoreV1().ConfigMaps(inv.namespace).Create(ctx, cm, metav1.CreateOptions{FieldManager: DefaultFieldManager})
	if err != nil {
		return fmt.Errorf("creating inventory ConfigMap %s/%s: %w", inv.namespace, inv.name, err)
	}
	inv.cm = created
	return nil
}

func ensureNamespace(ctx context.Context, kube kubernetes.Interface, name string) error {
	_, err := kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading namespace %s: %w", name, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: DefaultFieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}
