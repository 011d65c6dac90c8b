package up

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/statestore"
	"promised.dev/promised/statestore/pull"
)

// installPromises applies every promise under promises/ and the example
// promise, and waits for each to serve its API.
func (p *Platform) installPromises(ctx context.Context) error {
	dirs, _ := filepath.Glob(filepath.Join(p.opts.Root, "promises", "*", local.PromiseFile))
	nested, _ := filepath.Glob(filepath.Join(p.opts.Root, "promises", "*", "*", local.PromiseFile))
	dirs = append(dirs, nested...)
	dirs = append(dirs, filepath.Join(p.opts.Root, "examples", "team", local.PromiseFile))
	var names []string
	for _, f := range dirs {
		pr, err := local.LoadPromise(f)
		if err != nil {
			return err
		}
		if err := apply(ctx, p.client, pr); err != nil {
			return err
		}
		names = append(names, pr.Name)
	}
	p.say("installing promises: %s", strings.Join(names, ", "))
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range names {
		for {
			pr := &v1alpha1.Promise{}
			if err := p.client.Get(ctx, client.ObjectKey{Name: name}, pr); err == nil && condTrue(pr.Status.Conditions, "Ready") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("promise %s did not become Ready: see `kubectl --kubeconfig %s get promise %s -o yaml`", name, p.path("platform.kubeconfig"), name)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	p.say("promises Ready: %s", strings.Join(names, ", "))
	return nil
}

// startSync makes each workload cluster pull its folder from the Git
// store every two seconds, as Flux or Argo CD would.
func (p *Platform) startSync(ctx context.Context) error {
	for _, w := range workloads {
		applier, err := pull.NewApplier(p.planes[w.name].Config, pull.Options{Destination: w.name, AllowEmpty: true})
		if err != nil {
			return err
		}
		puller := &pull.Puller{
			Source: &pull.GitSource{URL: p.git.URL("state.git"), Branch: "main", Path: w.name,
				Basic: &statestore.BasicAuth{Username: p.gitCreds[0], Password: p.gitCreds[1]}, CacheDir: p.path(w.name, "pull")},
			Applier: applier,
		}
		sctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		name := w.name
		go func() {
			defer close(done)
			_ = puller.Run(sctx, 2*time.Second, func(r pull.Report, err error) { p.recordSync(name, r, err) })
		}()
		p.stop = append(p.stop, func() { cancel(); <-done })
	}
	p.say("dev and prod pull their folders from Git every 2s (promised sync)")
	return nil
}

// syncState is the last sync outcome per workload cluster.
var syncState = struct {
	sync.Mutex
	last map[string]pull.Report
	err  map[string]error
}{last: map[string]pull.Report{}, err: map[string]error{}}

func (p *Platform) recordSync(name string, r pull.Report, err error) {
	syncState.Lock()
	defer syncState.Unlock()
	syncState.last[name], syncState.err[name] = r, err
}

// lastSync returns the commit each workload cluster last applied.
func lastSync(name string) (pull.Report, error) {
	syncState.Lock()
	defer syncState.Unlock()
	return syncState.last[name], syncState.err[name]
}

func (p *Platform) printWhere() {
	p.say("the platform is up:")
	fmt.Fprintf(p.opts.Out, "   platform cluster  %s\n", p.path("platform.kubeconfig"))
	for _, w := range workloads {
		fmt.Fprintf(p.opts.Out, "   %-17s %s\n", w.name+" cluster", p.path(w.name+".kubeconfig"))
	}
	fmt.Fprintf(p.opts.Out, "   Git state store   %s (user %s, password in %s)\n", p.git.URL("state.git"), p.gitCreds[0], p.path("git-password"))
	fmt.Fprintf(p.opts.Out, "   try               kubectl --kubeconfig %s get promises\n", p.path("platform.kubeconfig"))
}

// exampleRequests reads every object of examples/requests/*.yaml.
func (p *Platform) exampleRequests() ([]*unstructured.Unstructured, error) {
	files, _ := filepath.Glob(filepath.Join(p.opts.Root, "examples", "requests", "*.yaml"))
	sort.Strings(files)
	var out []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading example %s: %w", f, err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("example %s: %w", f, err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				return nil, fmt.Errorf("example %s: %w", f, err)
			}
			if len(u.Object) > 0 {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

func (p *Platform) applyExamples(ctx context.Context) error {
	objs, err := p.exampleRequests()
	if err != nil {
		return err
	}
	var namespaces []string
	applied := 0
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			namespaces = append(namespaces, u.GetName())
		}
		if u.GetKind() == "Database" && p.postgres == nil {
			continue
		}
		if err := apply(ctx, p.client, u); err != nil {
			return err
		}
		if u.GetKind() != "Namespace" {
			applied++
		}
	}
	if err := p.ensureWorkloadNamespaces(ctx, namespaces); err != nil {
		return err
	}
	p.say("applied %d example requests from examples/requests", applied)
	return nil
}
