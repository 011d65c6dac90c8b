package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/controller"
	"promised.dev/promised/statestore"
)

// getFlags are shared by the get subcommands.
type getFlags struct {
	kubeconfig string
	output     string
}

func newGetCmd() *cobra.Command {
	var gf getFlags
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Show promises, their requests and where their output went, from the platform cluster",
		Args:  cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&gf.kubeconfig, "kubeconfig", "", "kubeconfig of the platform cluster (in-cluster config or $KUBECONFIG when empty)")
	cmd.PersistentFlags().StringVarP(&gf.output, "output", "o", "", "output format: a table when empty, or yaml or json (for scripts)")
	cmd.AddCommand(newGetPromisesCmd(&gf), newGetRequestsCmd(&gf), newGetTreeCmd(&gf))
	return cmd
}

func newGetPromisesCmd(gf *getFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "promises",
		Aliases: []string{"promise"},
		Short:   "List promises with their kind, request counts and readiness",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := gf.check(); err != nil {
				return err
			}
			c, err := platformClient(gf.kubeconfig)
			if err != nil {
				return err
			}
			list := &v1alpha1.PromiseList{}
			if err := c.List(cmd.Context(), list); err != nil {
				return fmt.Errorf("listing promises: %w", err)
			}
			rows := make([]promiseRow, 0, len(list.Items))
			for i := range list.Items {
				rows = append(rows, promiseRowOf(&list.Items[i]))
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
			if gf.output != "" {
				return printStructured(cmd.OutOrStdout(), gf.output, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No promises found.")
				return nil
			}
			return writePromiseTable(cmd.OutOrStdout(), rows)
		},
	}
}

func newGetRequestsCmd(gf *getFlags) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:     "requests PROMISE",
		Aliases: []string{"request"},
		Short:   "List a promise's requests with their state, destinations and commit",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := gf.check(); err != nil {
				return err
			}
			c, err := platformClient(gf.kubeconfig)
			if err != nil {
				return err
			}
			p := &v1alpha1.Promise{}
			if err := c.Get(cmd.Context(), types.NamespacedName{Name: args[0]}, p); err != nil {
				return fmt.Errorf("reading promise %q: %w", args[0], err)
			}
			items, err := listRequests(cmd.Context(), c, p, namespace)
			if err != nil {
				return err
			}
			rows := make([]requestRow, 0, len(items))
			for i := range items {
				rows = append(rows, requestRowOf(p.Name, &items[i]))
			}
			if gf.output != "" {
				return printStructured(cmd.OutOrStdout(), gf.output, rows)
			}
			if len(rows) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "No requests of promise %s found.\n", p.Name)
				return nil
			}
			return writeRequestTable(cmd.OutOrStdout(), rows)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only requests in this namespace (all namespaces when empty)")
	return cmd
}

func newGetTreeCmd(gf *getFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "tree [PROMISE...]",
		Short: "Show promise → request → destination → path in the state store → commit",
		Long: `Tree shows, for each promise (or the ones named), where its dependencies
were written and, for each request, the destinations its output was placed
on, the folder of the state store it was written to, and the commit.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := gf.check(); err != nil {
				return err
			}
			c, err := platformClient(gf.kubeconfig)
			if err != nil {
				return err
			}
			tree, err := readTree(cmd.Context(), c, args)
			if err != nil {
				return err
			}
			if gf.output != "" {
				return printStructured(cmd.OutOrStdout(), gf.output, tree)
			}
			if len(tree) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No promises found.")
				return nil
			}
			return writeTree(cmd.OutOrStdout(), tree)
		},
	}
}

func (gf *getFlags) check() error {
	switch gf.output {
	case "", "yaml", "json":
		return nil
	}
	return fmt.Errorf("unknown output format %q: use yaml or json, or nothing for a table", gf.output)
}

// platformClient is a client of the platform cluster that knows the
// promised types.
func platformClient(kubeconfig string) (client.Client, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	scheme, err := controller.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the platform cluster: %w", err)
	}
	return c, nil
}

// listRequests lists a promise's requests (in namespace, or all), sorted
// by namespace and name. A promise that serves no kind yet has none.
func listRequests(ctx context.Context, c client.Reader, p *v1alpha1.Promise, namespace string) ([]unstructured.Unstructured, error) {
	if p.Status.Kind == "" || p.Status.APIVersion == "" {
		return nil, nil
	}
	gv, err := schema.ParseGroupVersion(p.Status.APIVersion)
	if err != nil {
		return nil, fmt.Errorf("promise %q: status.apiVersion %q: %w", p.Name, p.Status.APIVersion, err)
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gv.WithKind(p.Status.Kind + "List"))
	var opts []client.ListOption
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, fmt.Errorf("listing requests of promise %q (%s %s): %w", p.Name, p.Status.APIVersion, p.Status.Kind, err)
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool {
		if items[i].GetNamespace() != items[j].GetNamespace() {
			return items[i].GetNamespace() < items[j].GetNamespace()
		}
		return items[i].GetName() < items[j].GetName()
	})
	return items, nil
}

// readTree gathers promises (all, or those named), their requests, and
// the destinations and stores that say where each folder is.
func readTree(ctx context.Context, c client.Reader, names []string) ([]treePromise, error) {
	var promises []v1alpha1.Promise
	if len(names) == 0 {
		list := &v1alpha1.PromiseList{}
		if err := c.List(ctx, list); err != nil {
			return nil, fmt.Errorf("listing promises: %w", err)
		}
		promises = list.Items
	} else {
		for _, n := range names {
			p := v1alpha1.Promise{}
			if err := c.Get(ctx, types.NamespacedName{Name: n}, &p); err != nil {
				return nil, fmt.Errorf("reading promise %q: %w", n, err)
			}
			promises = append(promises, p)
		}
	}
	dests := &v1alpha1.DestinationList{}
	if err := c.List(ctx, dests); err != nil {
		return nil, fmt.Errorf("listing destinations: %w", err)
	}
	stores := &v1alpha1.GitStateStoreList{}
	if err := c.List(ctx, stores); err != nil {
		return nil, fmt.Errorf("listing GitStateStores: %w", err)
	}
	requests := map[string][]unstructured.Unstructured{}
	notes := map[string]string{}
	for i := range promises {
		p := &promises[i]
		items, err := listRequests(ctx, c, p, "")
		if apimeta.IsNoMatchError(err) {
			// One promise whose API is not (or no longer) served must not
			// hide the others: say so under it and go on.
			notes[p.Name] = fmt.Sprintf("requests not listed: the cluster does not serve %s %s", p.Status.APIVersion, p.Status.Kind)
			continue
		}
		if err != nil {
			return nil, err
		}
		requests[p.Name] = items
	}
	return buildTree(promises, requests, notes, storePathsOf(dests.Items, stores.Items)), nil
}

// promiseRow is one line of `get promises` (and its -o output).
type promiseRow struct {
	Name       string                 `json:"name"`
	Kind       string                 `json:"kind,omitempty"`
	APIVersion string                 `json:"apiVersion,omitempty"`
	Requests   v1alpha1.RequestCounts `json:"requests"`
	// State is "Ready", the Ready condition's reason when it is not, or
	// "Pending" / "Deleting".
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
}

func promiseRowOf(p *v1alpha1.Promise) promiseRow {
	row := promiseRow{Name: p.Name, Kind: p.Status.Kind, APIVersion: p.Status.APIVersion, Requests: p.Status.Requests}
	ready := conditionOf(p.Status.Conditions, controller.CondReady)
	row.State, row.Message = stateOf(!p.DeletionTimestamp.IsZero(), p.Status.ObservedGeneration < p.Generation, ready)
	return row
}

// condition is the part of a condition the views use.
type condition struct {
	Status, Reason, Message string
}

func conditionOf(conds []metav1.Condition, t string) *condition {
	for _, c := range conds {
		if c.Type == t {
			return &condition{Status: string(c.Status), Reason: c.Reason, Message: c.Message}
		}
	}
	return nil
}

// stateOf sums up an object in one word: being deleted, not yet looked
// at (or at an older generation), Ready, or why it is not.
func stateOf(deleting, stale bool, ready *condition) (state, message string) {
	switch {
	case deleting:
		return "Deleting", ""
	case ready == nil:
		return "Pending", ""
	case stale:
		// A condition about an older spec says nothing about this one.
		return "Reconciling", ready.Message
	case ready.Status == string(metav1.ConditionTrue):
		return "Ready", ""
	case ready.Reason != "":
		return ready.Reason, ready.Message
	}
	return "NotReady", ready.Message
}

// requestRow is one line of `get requests` (and its -o output).
type requestRow struct {
	Promise      string   `json:"promise"`
	Namespace    string   `json:"namespace"`
	Name         string   `json:"name"`
	State        string   `json:"state"`
	Message      string   `json:"message,omitempty"`
	Destinations []string `json:"destinations,omitempty"`
	Commit       string   `json:"commit,omitempty"`
}

func requestRowOf(promise string, u *unstructured.Unstructured) requestRow {
	row := requestRow{Promise: promise, Namespace: u.GetNamespace(), Name: u.GetName()}
	dests, _, _ := unstructured.NestedStringSlice(u.Object, "status", "destinations")
	row.Destinations = sortedCopy(dests)
	row.Commit, _, _ = unstructured.NestedString(u.Object, "status", "commit")
	observed, found, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	var ready *condition
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, raw := range conds {
		if m, ok := raw.(map[string]any); ok && m["type"] == controller.CondReady {
			ready = &condition{Status: stringField(m["status"]), Reason: stringField(m["reason"]), Message: stringField(m["message"])}
		}
	}
	row.State, row.Message = stateOf(u.GetDeletionTimestamp() != nil, found && observed < u.GetGeneration(), ready)
	return row
}

func stringField(v any) string {
	s, _ := v.(string)
	return s
}

// storePaths locates a destination's folders: the store's path and the
// destination's own.
type storePaths struct {
	Store, Destination string
}

// storePathsOf maps destination names to their paths, as the controller
// computes them (the destination's path, or its name).
func storePathsOf(dests []v1alpha1.Destination, stores []v1alpha1.GitStateStore) map[string]storePaths {
	storePath := map[string]string{}
	for _, s := range stores {
		storePath[s.Name] = s.Spec.Path
	}
	out := map[string]storePaths{}
	for _, d := range dests {
		p := d.Spec.Path
		if p == "" {
			p = d.Name
		}
		out[d.Name] = storePaths{Store: storePath[d.Spec.StateStoreRef.Name], Destination: p}
	}
	return out
}

// treePromise is a promise and where its output went.
type treePromise struct {
	Name         string          `json:"name"`
	Kind         string          `json:"kind,omitempty"`
	State        string          `json:"state"`
	Dependencies []treePlacement `json:"dependencies,omitempty"`
	Requests     []treeRequest   `json:"requests,omitempty"`
	// Note says why requests are missing, when they could not be listed.
	Note string `json:"note,omitempty"`
}

// treeRequest is a request and where its output went.
type treeRequest struct {
	Namespace  string          `json:"namespace"`
	Name       string          `json:"name"`
	State      string          `json:"state"`
	Placements []treePlacement `json:"placements,omitempty"`
}

// treePlacement is one destination's folder. Path is empty when the
// destination is gone (its folder cannot be known any more).
type treePlacement struct {
	Destination string `json:"destination"`
	Path        string `json:"path,omitempty"`
	Commit      string `json:"commit,omitempty"`
}

// buildTree joins promises, their requests and notes (by promise name)
// and the destinations' paths into the tree, sorted by name.
func buildTree(promises []v1alpha1.Promise, requests map[string][]unstructured.Unstructured, notes map[string]string, paths map[string]storePaths) []treePromise {
	out := make([]treePromise, 0, len(promises))
	for i := range promises {
		p := &promises[i]
		row := promiseRowOf(p)
		tp := treePromise{Name: p.Name, Kind: p.Status.Kind, State: row.State, Note: notes[p.Name]}
		for _, d := range sortedCopy(p.Status.Destinations) {
			pl := treePlacement{Destination: d}
			if sp, ok := paths[d]; ok {
				pl.Path, _ = statestore.DependenciesDir(sp.Store, sp.Destination, p.Name)
			}
			tp.Dependencies = append(tp.Dependencies, pl)
		}
		for j := range requests[p.Name] {
			u := &requests[p.Name][j]
			r := requestRowOf(p.Name, u)
			tr := treeRequest{Namespace: r.Namespace, Name: r.Name, State: r.State}
			for _, d := range r.Destinations {
				pl := treePlacement{Destination: d, Commit: r.Commit}
				if sp, ok := paths[d]; ok {
					pl.Path, _ = statestore.ResourceDir(sp.Store, sp.Destination, r.Namespace, p.Name, r.Name)
				}
				tr.Placements = append(tr.Placements, pl)
			}
			tp.Requests = append(tp.Requests, tr)
		}
		out = append(out, tp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortedCopy(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

// printStructured writes v under "items", for scripts.
func printStructured(w io.Writer, format string, items any) error {
	doc := map[string]any{"items": items}
	var (
		b   []byte
		err error
	)
	if format == "json" {
		b, err = json.MarshalIndent(doc, "", "  ")
		b = append(b, '\n')
	} else {
		b, err = yaml.Marshal(doc)
	}
	if err != nil {
		return fmt.Errorf("encoding the output as %s: %w", format, err)
	}
	_, err = w.Write(b)
	return err
}

// writePromiseTable writes `get promises`: READY and FAILED count
// requests; STATUS is the promise's own state.
func writePromiseTable(w io.Writer, rows []promiseRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tREQUESTS\tREADY\tFAILED\tSTATUS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", r.Name, orDash(r.Kind), r.Requests.Total, r.Requests.Ready, r.Requests.Failed, r.State)
	}
	return tw.Flush()
}

// writeRequestTable writes `get requests`.
func writeRequestTable(w io.Writer, rows []requestRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tSTATE\tDESTINATIONS\tCOMMIT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.Name, r.State, orDash(strings.Join(r.Destinations, ",")), orDash(shortCommit(r.Commit)))
	}
	return tw.Flush()
}

// writeTree draws the tree:
//
//	widgets (Widget) Ready
//	├── dependencies
//	│   └── dev: platform/dev/dependencies/widgets
//	└── default/orders Ready
//	    └── dev: platform/dev/resources/default/widgets/orders @ 1a2b3c4d5e6f
func writeTree(w io.Writer, tree []treePromise) error {
	var b strings.Builder
	for i, p := range tree {
		if i > 0 {
			b.WriteByte('\n')
		}
		kind := ""
		if p.Kind != "" {
			kind = " (" + p.Kind + ")"
		}
		fmt.Fprintf(&b, "%s%s %s\n", p.Name, kind, p.State)
		children := len(p.Requests)
		if len(p.Dependencies) > 0 {
			children++
		}
		if p.Note != "" {
			children++
		}
		n := 0
		if len(p.Dependencies) > 0 {
			n++
			branch, indent := treeBranch(n == children)
			b.WriteString(branch + "dependencies\n")
			writePlacements(&b, indent, p.Dependencies)
		}
		for _, r := range p.Requests {
			n++
			branch, indent := treeBranch(n == children)
			fmt.Fprintf(&b, "%s%s/%s %s\n", branch, r.Namespace, r.Name, r.State)
			writePlacements(&b, indent, r.Placements)
		}
		if p.Note != "" {
			branch, _ := treeBranch(true)
			fmt.Fprintf(&b, "%s(%s)\n", branch, p.Note)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writePlacements(b *strings.Builder, indent string, pls []treePlacement) {
	for i, pl := range pls {
		branch, _ := treeBranch(i == len(pls)-1)
		where := pl.Path
		if where == "" {
			where = "(destination not found)"
		}
		line := indent + branch + pl.Destination + ": " + where
		if pl.Commit != "" {
			line += " @ " + shortCommit(pl.Commit)
		}
		b.WriteString(line + "\n")
	}
}

// treeBranch returns the connector of a child and the indent of its own
// children.
func treeBranch(last bool) (branch, indent string) {
	if last {
		return "└── ", "    "
	}
	return "├── ", "│   "
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortCommit abbreviates a commit as the controller's events do.
func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
