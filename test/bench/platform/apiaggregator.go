package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"promised.dev/promised/test/liveplatform"
)

const (
	aggregatorDir       = "promises/apiaggregator/aggregator"
	targetDir           = "promises/apiaggregator/target"
	aggregatorNamespace = "platform"
)

// apiAggregatorWorkload measures ApiAggregatorTargets spread over a
// handful of ApiAggregators the platform creates first (they are the
// platform's, not the developers' requests). Each target gets its own
// path prefix, so none is refused for claiming another's path.
func apiAggregatorWorkload(o options) *workload {
	for _, d := range []string{aggregatorDir, targetDir} {
		if _, err := os.Stat(filepath.Join(o.root, d, "promise.yaml")); err != nil {
			return nil
		}
	}
	w := &workload{name: "apiaggregator-target", dirs: []string{aggregatorDir, targetDir}}
	var aggregators, targets []*unstructured.Unstructured
	w.setup = func(ctx context.Context, p *platform) error {
		var err error
		if aggregators, err = examples(o.root, aggregatorDir); err != nil {
			return err
		}
		if targets, err = examples(o.root, targetDir); err != nil {
			return err
		}
		if len(aggregators) == 0 || len(targets) == 0 {
			return fmt.Errorf("no valid testdata for aggregators or targets")
		}
		return p.EnsureNamespace(ctx, aggregatorNamespace)
	}
	w.prepare = func(ctx context.Context, p *platform) error {
		w.note = fmt.Sprintf("targets over %d aggregators created before the run", o.aggregators)
		u := aggregators[0]
		gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
		if err != nil {
			return err
		}
		gvr := gv.WithResource("apiaggregators")
		res := p.Dynamic.Resource(gvr).Namespace(aggregatorNamespace)
		for k := range o.aggregators {
			a := fromExample(aggregators, k, fmt.Sprintf("agg-%d", k), aggregatorNamespace)
			spec := a.Object["spec"].(map[string]any)
			spec["hostnames"] = []any{fmt.Sprintf("api-%d.bench.example.com", k)}
			spec["targetNamespaces"] = map[string]any{"from": "All"}
			if _, err := res.Create(ctx, a, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating aggregator %s: %w", a.GetName(), err)
			}
		}
		return p.Poll(ctx, 90*time.Second, 100*time.Millisecond, "the aggregators Ready", func() (bool, error) {
			list, err := res.List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			ready := 0
			for i := range list.Items {
				if liveplatform.RequestReady(&list.Items[i]) {
					ready++
				}
			}
			return ready >= o.aggregators, nil
		})
	}
	w.request = func(i int, ns string) (*unstructured.Unstructured, error) {
		u := fromExample(targets, i, fmt.Sprintf("api-%05d", i), ns)
		spec := u.Object["spec"].(map[string]any)
		spec["aggregator"] = map[string]any{"name": fmt.Sprintf("agg-%d", i%max(1, o.aggregators)), "namespace": aggregatorNamespace}
		routes, _, _ := unstructured.NestedSlice(u.Object, "spec", "routes")
		for _, r := range routes {
			route, ok := r.(map[string]any)
			if !ok {
				continue
			}
			if path, ok := route["path"].(map[string]any); ok {
				path["value"] = fmt.Sprintf("/t%05d%v", i, path["value"])
			}
		}
		return u, unstructured.SetNestedSlice(u.Object, routes, "spec", "routes")
	}
	// No promise-level setting changes what a target renders: its output
	// follows its spec and its aggregator. The aggregator's implementation
	// setting changes the aggregators' output only.
	return w
}
