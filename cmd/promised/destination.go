package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/statestore"
)

func newDestinationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "destination",
		Short: "Work with destinations (the clusters that pull from the state store)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newDestinationManifestsCmd())
	return cmd
}

func newDestinationManifestsCmd() *cobra.Command {
	var (
		kubeconfig  string
		flux, argo  bool
		opts        pullerOptions
		interval    time.Duration
		argoProject string
		argoServer  string
	)
	cmd := &cobra.Command{
		Use:   "manifests NAME (--flux | --argocd)",
		Short: "Print the Flux or Argo CD objects that make a destination cluster pull its folder",
		Long: `Manifests reads Destination NAME and its GitStateStore from the platform
cluster and prints what to apply to the destination cluster so that it pulls
its folder of the state store: a Flux GitRepository and Kustomization
(--flux), or an Argo CD Application (--argocd). Both prune what leaves the
folder. Credentials are not printed: with --flux, --secret-name names a
Secret (keys username and password, as for the GitStateStore) in the Flux
namespace; Argo CD finds them in a repository Secret for the URL.`,
		Example: `  promised destination manifests dev --flux --secret-name state-store-git | kubectl --context dev apply -f -
  promised destination manifests dev --argocd | kubectl --context dev apply -f -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if flux == argo {
				return errors.New("choose one of --flux and --argocd")
			}
			if argo && opts.SecretName != "" {
				return errors.New("--secret-name is for --flux: Argo CD reads a repository's credentials from its repository Secret (argocd repo add URL --username … --password …)")
			}
			c, err := platformClient(kubeconfig)
			if err != nil {
				return err
			}
			t, err := readPullTarget(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			opts.Interval = interval
			var out []byte
			if flux {
				if opts.Namespace == "" {
					opts.Namespace = "flux-system"
				}
				out, err = renderFlux(t, opts)
			} else {
				if opts.Namespace == "" {
					opts.Namespace = "argocd"
				}
				out, err = renderArgoCD(t, opts, argoProject, argoServer)
			}
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the platform cluster (in-cluster config or $KUBECONFIG when empty)")
	f.BoolVar(&flux, "flux", false, "print a Flux GitRepository and Kustomization")
	f.BoolVar(&argo, "argocd", false, "print an Argo CD Application")
	f.StringVar(&opts.Name, "name", "", "name of the printed objects (promised-NAME when empty)")
	f.StringVar(&opts.Namespace, "namespace", "", "namespace of the printed objects (flux-system or argocd when empty)")
	f.StringVar(&opts.SecretName, "secret-name", "", "Flux: Secret with the Git credentials (keys username and password), in --namespace")
	f.DurationVar(&interval, "interval", time.Minute, "Flux: how often to fetch and apply")
	f.StringVar(&argoProject, "project", "default", "Argo CD: the Application's project")
	f.StringVar(&argoServer, "server", "https://kubernetes.default.svc", "Argo CD: the cluster to apply to (the default is the cluster Argo CD runs in)")
	return cmd
}

// pullTarget is what a puller needs to know about a destination.
type pullTarget struct {
	Destination string
	URL         string
	Branch      string
	// Folder is the destination's folder in the repository:
	// <store path>/<destination path>.
	Folder string
}

// pullerOptions shape the printed objects.
type pullerOptions struct {
	Name       string
	Namespace  string
	SecretName string
	Interval   time.Duration
}

func (o pullerOptions) name(t pullTarget) string {
	if o.Name != "" {
		return o.Name
	}
	return "promised-" + t.Destination
}

// readPullTarget reads a Destination and its GitStateStore.
func readPullTarget(ctx context.Context, c client.Reader, name string) (pullTarget, error) {
	d := &v1alpha1.Destination{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, d); err != nil {
		return pullTarget{}, fmt.Errorf("reading Destination %q: %w", name, err)
	}
	if k := d.Spec.StateStoreRef.Kind; k != "" && k != "GitStateStore" {
		return pullTarget{}, fmt.Errorf("destination %q: state store kind %q is not supported", name, k)
	}
	s := &v1alpha1.GitStateStore{}
	if err := c.Get(ctx, types.NamespacedName{Name: d.Spec.StateStoreRef.Name}, s); err != nil {
		return pullTarget{}, fmt.Errorf("destination %q: reading GitStateStore %q: %w", name, d.Spec.StateStoreRef.Name, err)
	}
	return pullTargetOf(d, s)
}

// pullTargetOf is where destination d's folder is in store s.
func pullTargetOf(d *v1alpha1.Destination, s *v1alpha1.GitStateStore) (pullTarget, error) {
	folder, err := destinationFolder(d, s)
	if err != nil {
		return pullTarget{}, err
	}
	branch := s.Spec.Branch
	if branch == "" {
		branch = "main"
	}
	return pullTarget{Destination: d.Name, URL: s.Spec.URL, Branch: branch, Folder: folder}, nil
}

// destinationFolder is <store path>/<destination path>, the parent of
// everything the layout places for d (as the controller computes it:
// the destination's path, or its name when empty).
func destinationFolder(d *v1alpha1.Destination, s *v1alpha1.GitStateStore) (string, error) {
	destPath := d.Spec.Path
	if destPath == "" {
		destPath = d.Name
	}
	// The layout functions are the one place that validates store and
	// destination paths; a folder they refuse is one the controller never
	// writes to.
	if _, err := statestore.DependenciesDir(s.Spec.Path, destPath, "check"); err != nil {
		return "", fmt.Errorf("destination %q: %w", d.Name, err)
	}
	return path.Join(s.Spec.Path, destPath), nil
}

// renderFlux prints a Flux GitRepository for the store and a
// Kustomization of the destination's folder. Flux generates a
// kustomization of every manifest under the path, applies CRDs and
// namespaces first, and prunes what leaves it.
func renderFlux(t pullTarget, o pullerOptions) ([]byte, error) {
	name := o.name(t)
	interval := o.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	repoSpec := map[string]any{
		"interval": interval.String(),
		"url":      t.URL,
		"ref":      map[string]any{"branch": t.Branch},
	}
	if o.SecretName != "" {
		repoSpec["secretRef"] = map[string]any{"name": o.SecretName}
	}
	repo := pullerObject("source.toolkit.fluxcd.io/v1", "GitRepository", name, o.Namespace, repoSpec)
	ks := pullerObject("kustomize.toolkit.fluxcd.io/v1", "Kustomization", name, o.Namespace, map[string]any{
		"interval":  interval.String(),
		"sourceRef": map[string]any{"kind": "GitRepository", "name": name},
		// Flux paths are relative to the repository root, written "./…".
		"path":  "./" + t.Folder,
		"prune": true,
	})
	header := fmt.Sprintf("# Flux: makes this cluster pull destination %q\n# (folder %s of %s, branch %s).\n", t.Destination, t.Folder, t.URL, t.Branch)
	return yamlStream(header, repo, ks)
}

// renderArgoCD prints an Argo CD Application that syncs the destination's
// folder, recursively, pruning and undoing manual changes.
func renderArgoCD(t pullTarget, o pullerOptions, project, server string) ([]byte, error) {
	app := pullerObject("argoproj.io/v1alpha1", "Application", o.name(t), o.Namespace, map[string]any{
		"project": project,
		"source": map[string]any{
			"repoURL":        t.URL,
			"targetRevision": t.Branch,
			"path":           t.Folder,
			// A destination's folder nests resources/<ns>/<promise>/<name>/….
			"directory": map[string]any{"recurse": true},
		},
		"destination": map[string]any{"server": server},
		"syncPolicy": map[string]any{
			"automated": map[string]any{"prune": true, "selfHeal": true},
			// Promise dependencies carry whole CRDs, which overflow the
			// last-applied annotation of client-side apply.
			"syncOptions": []any{"ServerSideApply=true"},
		},
	})
	header := fmt.Sprintf("# Argo CD: makes this cluster pull destination %q\n# (folder %s of %s, branch %s).\n# Credentials: argocd repo add %s --username … --password …\n", t.Destination, t.Folder, t.URL, t.Branch, t.URL)
	return yamlStream(header, app)
}

func pullerObject(apiVersion, kind, name, namespace string, spec map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": apiVersion,
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec":       spec,
	}
}

// yamlStream prints objects as one YAML stream (keys sorted, so the output
// is the same on every run).
func yamlStream(header string, objs ...map[string]any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(header)
	for i, o := range objs {
		if i > 0 {
			b.WriteString("---\n")
		}
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", o["kind"], err)
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}
