package up

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"promised.dev/promised/api/v1alpha1"
)

// row is one request as the summary shows it.
type row struct {
	promise, kind, namespace, name string
	ready                          bool
	message                        string
	destinations                   []string
	commit                         string
	applied                        map[string]bool
}

// rows reads every request of every promise.
func (p *Platform) rows(ctx context.Context) ([]row, error) {
	promises := &v1alpha1.PromiseList{}
	if err := p.client.List(ctx, promises); err != nil {
		return nil, fmt.Errorf("listing promises: %w", err)
	}
	var out []row
	for _, pr := range promises.Items {
		if pr.Status.Kind == "" {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion(pr.Status.APIVersion)
		list.SetKind(pr.Status.Kind + "List")
		if err := p.client.List(ctx, list); err != nil {
			return nil, fmt.Errorf("listing %s: %w", pr.Status.Kind, err)
		}
		for _, item := range list.Items {
			r := row{promise: pr.Name, kind: pr.Status.Kind, namespace: item.GetNamespace(), name: item.GetName(), applied: map[string]bool{}}
			r.destinations, _, _ = unstructured.NestedStringSlice(item.Object, "status", "destinations")
			r.commit, _, _ = unstructured.NestedString(item.Object, "status", "commit")
			conds, _, _ := unstructured.NestedSlice(item.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
					r.ready = m["status"] == "True"
					r.message, _ = m["message"].(string)
				}
			}
			for _, d := range r.destinations {
				r.applied[d] = p.appliedOn(d, r.commit)
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].promise != out[j].promise {
			return out[i].promise < out[j].promise
		}
		return out[i].namespace+"/"+out[i].name < out[j].namespace+"/"+out[j].name
	})
	return out, nil
}

// appliedOn reports whether a workload cluster's last successful sync
// applied a commit that contains commit.
func (p *Platform) appliedOn(dest, commit string) bool {
	rep, err := lastSync(dest)
	if err != nil || rep.Commit == "" || commit == "" {
		return false
	}
	if rep.Commit == commit {
		return true
	}
	cmd := exec.Command("git", "merge-base", "--is-ancestor", commit, rep.Commit)
	cmd.Dir = p.path("git", "state.git")
	return cmd.Run() == nil
}

func (r row) done() bool {
	if !r.ready || len(r.destinations) == 0 {
		return false
	}
	for _, d := range r.destinations {
		if !r.applied[d] {
			return false
		}
	}
	return true
}

// waitAndSummarise shows progress until every request is Ready and
// applied on its workload cluster, then prints the tree.
func (p *Platform) waitAndSummarise(ctx context.Context) error {
	last := ""
	for {
		rows, err := p.rows(ctx)
		if err == nil {
			done := 0
			for _, r := range rows {
				if r.done() {
					done++
				}
			}
			if line := fmt.Sprintf("%d/%d requests Ready and applied on their clusters", done, len(rows)); line != last {
				p.say("%s", line)
				last = line
			}
			if done == len(rows) {
				p.printTree(rows)
				return p.checkServices(ctx, rows)
			}
		}
		select {
		case <-ctx.Done():
			if rows, err := p.rows(context.Background()); err == nil {
				p.printTree(rows)
			}
			return fmt.Errorf("the examples did not converge: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// watchProgress prints a line whenever the count of converged requests
// changes, until ctx ends.
func (p *Platform) watchProgress(ctx context.Context) error {
	last := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
		rows, err := p.rows(ctx)
		if err != nil {
			continue
		}
		done := 0
		for _, r := range rows {
			if r.done() {
				done++
			}
		}
		if line := fmt.Sprintf("%d/%d requests Ready and applied on their clusters", done, len(rows)); line != last {
			p.say("%s", line)
			last = line
		}
	}
}

// printTree prints promise → request → destination → path → commit →
// applied.
func (p *Platform) printTree(rows []row) {
	out := p.opts.Out
	current := ""
	for _, r := range rows {
		if r.promise != current {
			fmt.Fprintf(out, "promise %s (%s)\n", r.promise, r.kind)
			current = r.promise
		}
		state := "Ready"
		if !r.ready {
			state = "NotReady: " + r.message
		}
		fmt.Fprintf(out, "└─ %s/%s  %s\n", r.namespace, r.name, state)
		for _, d := range r.destinations {
			applied := "not yet applied"
			if r.applied[d] {
				applied = "applied on " + d
			}
			commit := r.commit
			if len(commit) > 12 {
				commit = commit[:12]
			}
			fmt.Fprintf(out, "   └─ %s  %s/resources/%s/%s/%s  commit %s  %s\n", d, d, r.namespace, r.promise, r.name, commit, applied)
		}
	}
}

// checkServices proves the delivered credentials work: each Database
// request's workload connects to its database, each NatsUser's to NATS.
func (p *Platform) checkServices(ctx context.Context, rows []row) error {
	failed := 0
	for _, r := range rows {
		var msg string
		switch r.kind {
		case "Database":
			msg = p.checkDatabase(ctx, r)
		case "NatsUser":
			msg = p.checkNATS(ctx, r)
		default:
			continue
		}
		fmt.Fprintf(p.opts.Out, "check %s/%s: %s\n", r.namespace, r.name, msg)
		if !strings.HasPrefix(msg, "connected") {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d delivered credential(s) did not work", failed)
	}
	return nil
}
