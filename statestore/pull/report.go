package pull

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ObjectRef identifies an object in the cluster. Two refs name the same
// object when group, kind, namespace and name agree: the version is kept
// (to find the object's REST endpoint again) but a manifest that moves from
// v1beta1 to v1 is still the same object.
type ObjectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// GroupKind is the ref's group and kind.
func (r ObjectRef) GroupKind() schema.GroupKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind).GroupKind()
}

// key is the ref's identity, version left out.
func (r ObjectRef) key() string {
	gk := r.GroupKind()
	return gk.Group + "|" + gk.Kind + "|" + r.Namespace + "|" + r.Name
}

// String is "Kind[.group] [namespace/]name", kubectl's resource.group form
// with the kind, so a ConfigMap reads "ConfigMap default/app" and a CRD
// "CustomResourceDefinition.apiextensions.k8s.io widgets.example.com".
func (r ObjectRef) String() string {
	if r.Kind == "" && r.Name == "" {
		return "-"
	}
	kind := r.GroupKind().String()
	if r.Namespace == "" {
		return kind + " " + r.Name
	}
	return kind + " " + r.Namespace + "/" + r.Name
}

// Action is what a sync did with one object.
type Action string

const (
	// ActionApplied means the object was created or changed.
	ActionApplied Action = "applied"
	// ActionUnchanged means the apply changed nothing (the object's
	// resourceVersion stayed the same).
	ActionUnchanged Action = "unchanged"
	// ActionPruned means the object left the folder and was deleted (or
	// was already gone).
	ActionPruned Action = "pruned"
	// ActionKept means the object left the folder but was not deleted:
	// sync did not create it (it is no longer tracked), or deleting it (a
	// CRD, a namespace) would delete objects sync did not create (it stays
	// tracked and is pruned once they are gone).
	ActionKept Action = "kept"
	// ActionFailed means the object could not be applied or deleted (or its
	// document could not be read); Reason says why.
	ActionFailed Action = "failed"
)

// ObjectResult is the outcome for one object (or, for a document that
// does not parse, one document).
type ObjectResult struct {
	Object ObjectRef `json:"object"`
	// File is the document the object came from ("path#n"), relative to
	// the folder; empty for pruned objects.
	File   string `json:"file,omitempty"`
	Action Action `json:"action"`
	// Reason explains a failure, or why an object was kept.
	Reason string `json:"reason,omitempty"`
}

// Report is the outcome of one sync.
type Report struct {
	// Destination names the inventory the sync used.
	Destination string `json:"destination"`
	// Commit is the state store revision that was applied, when the source
	// knows it.
	Commit string `json:"commit,omitempty"`
	// Objects in the order they were handled: CRDs, namespaces, the rest,
	// then pruned objects.
	Objects []ObjectResult `json:"objects"`
	// Notes are things worth knowing that are not object results: skipped
	// files, a prune that was held back.
	Notes []string `json:"notes,omitempty"`
}

// Count returns the number of objects with action a.
func (r Report) Count(a Action) int {
	n := 0
	for _, o := range r.Objects {
		if o.Action == a {
			n++
		}
	}
	return n
}

// Err is non-nil when any object failed: the signal for a non-zero exit.
func (r Report) Err() error {
	if n := r.Count(ActionFailed); n > 0 {
		return fmt.Errorf("destination %s: %d of %d objects failed", r.Destination, n, len(r.Objects))
	}
	return nil
}

// Summary is a one-line count of the actions.
func (r Report) Summary() string {
	parts := []string{}
	for _, a := range []Action{ActionApplied, ActionUnchanged, ActionPruned, ActionKept, ActionFailed} {
		if n := r.Count(a); n > 0 || a == ActionFailed {
			parts = append(parts, fmt.Sprintf("%d %s", n, a))
		}
	}
	return strings.Join(parts, ", ")
}

// WriteText writes the report for people: one line per object (action,
// object, source document, reason), the notes, and the summary.
func (r Report) WriteText(w io.Writer) error {
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	for _, o := range r.Objects {
		// Every row has all four cells, so tabwriter aligns them as one
		// block; the padding this leaves after short rows is trimmed below.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.Action, o.Object, o.File, oneLine(o.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		if line != "" {
			out.WriteString(strings.TrimRight(line, " \n") + "\n")
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&out, "note: %s\n", n)
	}
	out.WriteString(r.Headline() + "\n")
	_, err := w.Write(out.Bytes())
	return err
}

// Headline is the report's last line: destination, commit and Summary.
func (r Report) Headline() string {
	at := ""
	if r.Commit != "" {
		at = " at " + shortCommit(r.Commit)
	}
	return fmt.Sprintf("%s%s: %s", r.Destination, at, r.Summary())
}

// Quiet is true when the sync changed nothing and has nothing to tell:
// every object unchanged, no notes.
func (r Report) Quiet() bool {
	return len(r.Notes) == 0 && r.Count(ActionUnchanged) == len(r.Objects)
}

// oneLine keeps a multi-line apiserver message on its row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
