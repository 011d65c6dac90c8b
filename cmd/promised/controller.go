package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/controller"
	"promised.dev/promised/pipelines/job"
)

func newControllerCmd() *cobra.Command {
	var (
		kubeconfig string
		opts       controller.Options
		qps        float32
		burst      int
		zapOpts    zap.Options
		noJobs     bool
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the controller against a platform cluster",
		Long: `Controller runs the orchestrator: it installs every Promise's API, runs the
workflows of every request, places their output on destinations and writes it
to the Git state stores. Built-in stages run in-process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = qps, burst
			if opts.Registry, err = builtin.Registry(); err != nil {
				return err
			}
			if opts.StateDir == "" {
				opts.StateDir = filepath.Join(os.TempDir(), "promised-stores")
			}
			if opts.PlatformKey, err = platformKey(cmd.Context(), cfg, opts.PlatformNamespace); err != nil {
				return err
			}
			if !noJobs {
				// Pipelines whose images are not built in run as Jobs.
				if opts.JobRunner, err = job.NewForConfig(cfg, job.Options{Namespace: opts.PlatformNamespace}); err != nil {
					return err
				}
			}
			mgr, err := controller.NewManager(cfg, opts)
			if err != nil {
				return err
			}
			// Without a check, controller-runtime answers the probes 404
			// and a Deployment's liveness probe would restart the pod.
			if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
				return fmt.Errorf("adding the health check: %w", err)
			}
			if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
				return fmt.Errorf("adding the readiness check: %w", err)
			}
			return mgr.Start(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the platform cluster (in-cluster config or $KUBECONFIG when empty)")
	f.IntVar(&opts.MaxConcurrentReconciles, "max-concurrent-reconciles", controller.DefaultConcurrency(), "requests of one kind reconciled at once")
	f.DurationVar(&opts.CommitInterval, "commit-interval", controller.DefaultCommitInterval, "shortest time between two commits to one state store; writes arriving sooner share the next commit (0: commit as fast as pushes go)")
	f.Float32Var(&qps, "kube-api-qps", 200, "queries per second to the kube-apiserver")
	f.IntVar(&burst, "kube-api-burst", 400, "burst of queries to the kube-apiserver")
	f.StringVar(&opts.PlatformNamespace, "platform-namespace", "promised-system", "namespace of the controller's own objects (platform key, ledger entries of promise workflows)")
	f.StringVar(&opts.StateDir, "state-dir", "", "folder for the state stores' clones (a temporary folder when empty)")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "address of /metrics (\"0\" disables it)")
	f.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	f.StringVar(&opts.PprofAddr, "pprof-bind-address", "", "address of /debug/pprof/ (empty or \"0\" disables it; keep it on loopback)")
	f.BoolVar(&opts.LeaderElection, "leader-elect", false, "elect one active replica, for HA deployments")
	f.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election lease")
	f.BoolVar(&noJobs, "no-job-runner", false, "run only built-in stages (pipelines with other images fail with a condition): for clusters without nodes")
	logFlags := flag.NewFlagSet("log", flag.ContinueOnError)
	zapOpts.BindFlags(logFlags)
	f.AddGoFlagSet(logFlags)
	return cmd
}

// restConfig loads a kubeconfig file, or the in-cluster / $KUBECONFIG
// configuration when path is empty.
func restConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := ctrl.GetConfig()
		if err != nil {
			return nil, fmt.Errorf("loading the cluster configuration: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// platformKey reads (or creates once) the key that fingerprints sealed
// secrets.
func platformKey(ctx context.Context, cfg *rest.Config, namespace string) ([]byte, error) {
	scheme, err := controller.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the platform cluster: %w", err)
	}
	return controller.PlatformKeyFromSecret(ctx, c, namespace)
}
