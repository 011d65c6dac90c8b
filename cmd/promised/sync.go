package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/statestore"
	"promised.dev/promised/statestore/pull"
)

// Environment variables read for the Git credentials, so they need not be
// on the command line (where other users of the machine can see them).
const (
	envGitUsername = "PROMISED_GIT_USERNAME"
	envGitPassword = "PROMISED_GIT_PASSWORD"
)

// gitCredentialFlags are where the Git credentials may come from.
type gitCredentialFlags struct {
	username, password string
	file               string
}

func newSyncCmd() *cobra.Command {
	var (
		src         pull.GitSource
		creds       gitCredentialFlags
		caFile      string
		kubeconfig  string
		opts        pull.Options
		once        bool
		interval    time.Duration
		output      string
		zapOpts     zap.Options
		destination string
	)
	cmd := &cobra.Command{
		Use:   "sync --url URL --path FOLDER",
		Short: "Pull a destination's folder from the state store and apply it to a cluster",
		Long: `Sync is the built-in puller, for local use and small setups (at scale, Flux or
Argo CD do this job: see 'promised destination manifests'). It reads FOLDER
(<store path>/<destination path>) of the Git repository at URL and applies
every YAML document in it to the cluster with server-side apply (field
manager "promised"): CRDs first (waiting until they are Established), then
namespaces, then the rest. What left the folder since the last sync is
pruned, if sync created it: an inventory in namespace promised-system lists
what it applied, and every object it applies is labelled
promised.dev/managed-by=sync.

Each object's outcome is printed (applied, unchanged, pruned, kept, failed).
A rejected object does not stop the others; the command exits non-zero when
any failed. Credentials come from --username/--password, else
$PROMISED_GIT_USERNAME/$PROMISED_GIT_PASSWORD, else --credentials (a mounted
Secret folder with files username and password, or a YAML file with those
keys); they never appear in output or logs.`,
		Example: `  PROMISED_GIT_USERNAME=bot PROMISED_GIT_PASSWORD=$TOKEN \
    promised sync --url https://git.example.com/platform/state.git --path platform/dev
  promised sync --url https://git.example.com/platform/state.git --path dev \
    --credentials /var/run/secrets/git --interval 1m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("once") && cmd.Flags().Changed("interval") && once {
				return errors.New("--once and --interval contradict each other: choose one")
			}
			if interval < 0 {
				return errors.New("--interval must be positive")
			}
			if src.URL == "" || src.Path == "" {
				return errors.New("--url and --path are required")
			}
			if output != "" && output != "json" && output != "yaml" {
				return fmt.Errorf("unknown output format %q: use yaml or json, or nothing for text", output)
			}
			log := zap.New(zap.UseFlagOptions(&zapOpts), zap.ConsoleEncoder(), zap.WriteTo(cmd.ErrOrStderr()))
			basic, err := creds.resolve(os.Getenv)
			if err != nil {
				return err
			}
			src.Basic = basic
			if caFile != "" {
				if src.CABundle, err = os.ReadFile(caFile); err != nil {
					return fmt.Errorf("reading --ca-file: %w", err)
				}
			}
			src.Logger = log.WithName("git")
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			opts.Destination = destination
			if opts.Destination == "" {
				opts.Destination = src.Path
			}
			opts.Logger = log.WithName("sync")
			applier, err := pull.NewApplier(cfg, opts)
			if err != nil {
				return err
			}
			p := &pull.Puller{Source: &src, Applier: applier}
			out := cmd.OutOrStdout()
			if interval == 0 {
				rep, err := p.Once(cmd.Context())
				if err == nil || len(rep.Objects) > 0 {
					if perr := printReport(out, output, rep); perr != nil {
						return perr
					}
				}
				if errors.Is(err, pull.ErrEmptySource) {
					return fmt.Errorf("%w: check --path and --branch, or pass --allow-empty", err)
				}
				if err != nil {
					return err
				}
				return rep.Err()
			}
			if src.CacheDir == "" {
				// Keep the clone for the life of the loop, so each pull
				// fetches only what is new.
				dir, err := os.MkdirTemp("", "promised-sync-")
				if err != nil {
					return fmt.Errorf("creating a folder for the clone: %w", err)
				}
				defer os.RemoveAll(dir)
				src.CacheDir = dir
			}
			return p.Run(cmd.Context(), interval, func(rep pull.Report, err error) {
				switch {
				case err == nil && rep.Quiet() && output == "":
					// A pull every few seconds that changes nothing gets
					// one line, not one per object.
					fmt.Fprintln(out, rep.Headline())
				case err == nil || len(rep.Objects) > 0:
					if perr := printReport(out, output, rep); perr != nil {
						log.Error(perr, "printing the report")
					}
				}
				if err == nil {
					err = rep.Err()
				}
				if err != nil {
					log.Error(err, "sync failed; trying again at the next interval", "interval", interval.String())
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&src.URL, "url", "", "URL of the state store's Git repository")
	f.StringVar(&src.Branch, "branch", "main", "branch to pull")
	f.StringVar(&src.Path, "path", "", "the destination's folder in the repository: <store path>/<destination path>")
	f.StringVar(&destination, "destination", "", "name of the destination, which names its inventory (--path when empty)")
	f.StringVar(&creds.username, "username", "", "Git username (or $"+envGitUsername+")")
	f.StringVar(&creds.password, "password", "", "Git password or token (or $"+envGitPassword+"; visible to other users in the process list)")
	f.StringVar(&creds.file, "credentials", "", "Git credentials: a folder with files username and password (a mounted Secret) or a YAML file with those keys")
	f.StringVar(&caFile, "ca-file", "", "PEM certificates to trust for https, in addition to the system's")
	f.StringVar(&src.CacheDir, "cache-dir", "", "keep the Git clone here between runs (a temporary folder when empty)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to apply to (in-cluster config or $KUBECONFIG when empty)")
	f.StringVar(&opts.InventoryNamespace, "inventory-namespace", pull.DefaultInventoryNamespace, "namespace of the inventory ConfigMap")
	f.BoolVar(&opts.AllowEmpty, "allow-empty", false, "when the folder is empty or missing, prune everything sync applied before (refused by default: it looks the same as a mistyped --path)")
	f.BoolVar(&once, "once", true, "sync one time and exit (the default)")
	f.DurationVar(&interval, "interval", 0, "keep pulling: sync now and then at this interval, until interrupted")
	f.StringVarP(&output, "output", "o", "", "report format: text when empty, or yaml or json")
	logFlags := flag.NewFlagSet("log", flag.ContinueOnError)
	zapOpts.BindFlags(logFlags)
	f.AddGoFlagSet(logFlags)
	return cmd
}

// printReport writes a sync's report as text (one line per object) or as
// one JSON / YAML document per sync.
func printReport(w io.Writer, format string, rep pull.Report) error {
	switch format {
	case "":
		return rep.WriteText(w)
	case "json":
		b, err := json.Marshal(rep)
		if err != nil {
			return fmt.Errorf("encoding the report: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	default:
		b, err := yaml.Marshal(rep)
		if err != nil {
			return fmt.Errorf("encoding the report: %w", err)
		}
		_, err = fmt.Fprintf(w, "---\n%s", b)
		return err
	}
}

// resolve picks the Git credentials: flags, else the environment, else
// the file. No username and no password means no authentication.
func (c gitCredentialFlags) resolve(getenv func(string) string) (*statestore.BasicAuth, error) {
	user, pass := c.username, c.password
	if user == "" && pass == "" {
		user, pass = getenv(envGitUsername), getenv(envGitPassword)
	}
	if user == "" && pass == "" && c.file != "" {
		var err error
		if user, pass, err = readCredentials(c.file); err != nil {
			return nil, err
		}
	}
	switch {
	case user == "" && pass == "":
		return nil, nil
	case pass == "":
		return nil, fmt.Errorf("a Git username (%q) without a password or token", user)
	}
	return &statestore.BasicAuth{Username: user, Password: pass}, nil
}

// readCredentials reads a username and a password from a folder holding
// files of those names (a Kubernetes Secret mounted as a volume, with the
// keys a GitStateStore's Secret has) or from a YAML file with those keys.
func readCredentials(path string) (user, pass string, err error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("reading credentials: %w", err)
	}
	if info.IsDir() {
		u, err := os.ReadFile(filepath.Join(path, "username"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("reading credentials: %w", err)
		}
		p, err := os.ReadFile(filepath.Join(path, "password"))
		if err != nil {
			return "", "", fmt.Errorf("reading credentials from folder %s: %w", path, err)
		}
		return strings.TrimSpace(string(u)), strings.TrimSpace(string(p)), nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("reading credentials: %w", err)
	}
	var doc struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	// The parser's message could quote the file, password included.
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return "", "", fmt.Errorf("credentials file %s: want a YAML mapping with keys username and password", path)
	}
	return doc.Username, doc.Password, nil
}
