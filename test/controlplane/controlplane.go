// Package controlplane starts a real kube-apiserver and etcd on this machine
// for tests and for `promised up`.
//
// Reconcilers are tested against a real API server rather than
// controller-runtime's fake client, whose own documentation recommends
// envtest instead: only a real server has admission, defaulting, CRD
// validation, resourceVersion conflicts and garbage-collection semantics.
// Release binaries cannot be downloaded where promised is developed, so the
// binaries are compiled from Go modules by `make controlplane` (see
// test/controlplane/build) into a per-version cache directory, and this
// package finds them there.
package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Version is the Kubernetes version `make controlplane` builds. It names the
// cache directory, so binaries of another version are never picked up by
// accident.
const Version = "v1.37.0"

// EnvBinDir names the variable that points at the directory holding
// kube-apiserver and etcd. The Makefile exports it; it wins over
// KUBEBUILDER_ASSETS so that a KUBEBUILDER_ASSETS left over from another
// project cannot swap in binaries of a different version.
const EnvBinDir = "PROMISED_CONTROLPLANE_BIN"

// ErrBinariesMissing is returned (wrapped) when kube-apiserver or etcd is not
// where BinDir looks. Its text is the one thing a developer needs to do, and
// tests fail with it instead of skipping, so a missing build is never
// mistaken for a passing suite.
var ErrBinariesMissing = errors.New("run `make controlplane` to build kube-apiserver and etcd")

// binaries are the programs envtest starts; kubectl is optional and unused.
var binaries = []string{"kube-apiserver", "etcd"}

// defaultStartTimeout replaces envtest's 20 seconds: on a 2-core machine that
// is also compiling, kube-apiserver regularly needs longer than that to
// become healthy, and a flaky start is worse than a slow one.
const defaultStartTimeout = 90 * time.Second

// BinDir returns the directory holding kube-apiserver and etcd, checked to
// contain both. It looks, in order, at $PROMISED_CONTROLPLANE_BIN,
// $KUBEBUILDER_ASSETS, $PROMISED_CACHE/controlplane/<Version> and
// $HOME/.cache/promised/controlplane/<Version> (the Makefile's default
// CONTROLPLANE_BIN). The first one that is set is used even if it is
// incomplete: silently falling through to another directory would hide a
// misconfiguration. The error wraps ErrBinariesMissing.
func BinDir() (string, error) {
	dir, from, err := binDirCandidate()
	if err != nil {
		return "", err
	}
	if err := checkBinaries(dir); err != nil {
		return "", fmt.Errorf("%s (from %s): %w", dir, from, err)
	}
	return dir, nil
}

// binDirCandidate picks the directory BinDir checks and says where it came
// from, for the error message.
func binDirCandidate() (dir, from string, err error) {
	for _, name := range []string{EnvBinDir, "KUBEBUILDER_ASSETS"} {
		if v := os.Getenv(name); v != "" {
			return v, "$" + name, nil
		}
	}
	if cache := os.Getenv("PROMISED_CACHE"); cache != "" {
		return filepath.Join(cache, "controlplane", Version), "$PROMISED_CACHE", nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", "", fmt.Errorf("locating the control plane binaries: %w: %w", err, ErrBinariesMissing)
	}
	return filepath.Join(home, ".cache", "promised", "controlplane", Version), "the default cache", nil
}

// checkBinaries reports the first of kube-apiserver and etcd that is missing
// or not executable in dir.
func checkBinaries(dir string) error {
	for _, name := range binaries {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("no %s: %w", name, ErrBinariesMissing)
		}
		if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file: %w", name, ErrBinariesMissing)
		}
	}
	return nil
}

// Options configures Start. The zero value starts an empty control plane
// with the binaries BinDir finds.
type Options struct {
	// BinDir holds kube-apiserver and etcd; empty means BinDir().
	BinDir string

	// CRDDirectoryPaths are directories (or single files) of CRD YAML to
	// install before Start returns, typically config/crd. Start waits until
	// every CRD is served, so tests can create custom resources at once.
	CRDDirectoryPaths []string

	// CRDs are CRD objects to install, in addition to CRDDirectoryPaths.
	CRDs []*apiextensionsv1.CustomResourceDefinition

	// ErrorIfCRDPathMissing makes Start fail when a CRDDirectoryPaths entry
	// does not exist. Test suites should set it: a mistyped path otherwise
	// surfaces much later as "no matches for kind".
	ErrorIfCRDPathMissing bool

	// APIServerFlags are extra kube-apiserver flags (without the leading
	// dashes), for example {"feature-gates": {"Foo=true"}}. They replace
	// envtest's value for the same flag.
	APIServerFlags map[string][]string

	// EtcdDataDir keeps etcd's data in this directory across restarts, for
	// `promised up`. Empty means a temporary directory removed on Stop,
	// which is what tests want.
	EtcdDataDir string

	// StartTimeout bounds how long each of etcd and kube-apiserver may take
	// to become healthy. Zero means $KUBEBUILDER_CONTROLPLANE_START_TIMEOUT
	// if set, else 90 seconds.
	StartTimeout time.Duration

	// AttachOutput streams etcd's and kube-apiserver's logs to this
	// process's stdout and stderr, for debugging a failing start.
	AttachOutput bool
}

// ControlPlane is a running kube-apiserver and etcd. Stop it when done: the
// processes outlive a test binary that exits without stopping them.
type ControlPlane struct {
	// Config connects as an administrator (group system:masters). Copy it
	// (rest.CopyConfig) before changing it: it is shared.
	Config *rest.Config

	// BinDir is where kube-apiserver and etcd were started from.
	BinDir string

	env      *envtest.Environment
	stopOnce sync.Once
	stopErr  error
}

// Start starts etcd and kube-apiserver, waits until the API server serves
// the default namespace, and installs the CRDs named in opts. On any failure
// it stops whatever it had started, so a failed Start leaves no process
// behind.
func Start(opts Options) (*ControlPlane, error) {
	dir := opts.BinDir
	if dir == "" {
		var err error
		if dir, err = BinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinaries(dir); err != nil {
		return nil, fmt.Errorf("%s (from Options.BinDir): %w", dir, err)
	}

	startTimeout := opts.StartTimeout
	if startTimeout == 0 && os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		startTimeout = defaultStartTimeout
	}

	useExistingCluster := false
	env := &envtest.Environment{
		// Paths are set explicitly below as well: envtest otherwise lets
		// KUBEBUILDER_ASSETS and TEST_ASSET_* override this directory,
		// which would start binaries other than the ones BinDir checked.
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     opts.CRDDirectoryPaths,
		CRDs:                  opts.CRDs,
		ErrorIfCRDPathMissing: opts.ErrorIfCRDPathMissing,
		// USE_EXISTING_CLUSTER=true in someone's shell must never point
		// the test suite at a real cluster.
		UseExistingCluster:       &useExistingCluster,
		ControlPlaneStartTimeout: startTimeout,
		AttachControlPlaneOutput: opts.AttachOutput,
	}
	apiServer := env.ControlPlane.GetAPIServer()
	apiServer.Path = filepath.Join(dir, "kube-apiserver")
	env.ControlPlane.Etcd = &envtest.Etcd{
		Path:    filepath.Join(dir, "etcd"),
		DataDir: opts.EtcdDataDir,
	}
	for flag, values := range opts.APIServerFlags {
		apiServer.Configure().Set(flag, values...)
	}

	cfg, err := env.Start()
	if err != nil {
		// envtest can fail after the processes are up (a bad CRD, a
		// missing CRD path); stop them rather than leak them.
		if stopErr := env.Stop(); stopErr != nil {
			return nil, fmt.Errorf("starting the control plane from %s: %w (and stopping it: %w)", dir, err, stopErr)
		}
		return nil, fmt.Errorf("starting the control plane from %s: %w", dir, err)
	}
	return &ControlPlane{Config: cfg, BinDir: dir, env: env}, nil
}

// Stop stops kube-apiserver and etcd and removes their temporary
// directories. It is safe to call more than once and from several
// goroutines (a signal handler and a deferred call may race); every call
// returns the first call's result.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		if err := cp.env.Stop(); err != nil {
			cp.stopErr = fmt.Errorf("stopping the control plane: %w", err)
		}
	})
	return cp.stopErr
}

// AddUser provisions a user that authenticates with a client certificate
// and returns a config for it. RBAC is on, so such a user can do nothing
// until a test grants it roles: this is how a test checks that a component
// works with the permissions its manifests grant, not as an administrator.
func (cp *ControlPlane) AddUser(name string, groups ...string) (*rest.Config, error) {
	user, err := cp.env.AddUser(envtest.User{Name: name, Groups: groups}, rest.CopyConfig(cp.Config))
	if err != nil {
		return nil, fmt.Errorf("adding user %q: %w", name, err)
	}
	return user.Config(), nil
}

// Kubeconfig returns a kubeconfig for the administrator, with the
// credentials inlined so the file works on its own.
func (cp *ControlPlane) Kubeconfig() ([]byte, error) {
	const name = "promised"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   cp.Config.Host,
		CertificateAuthorityData: cp.Config.CAData,
	}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cp.Config.CertData,
		ClientKeyData:         cp.Config.KeyData,
		Token:                 cp.Config.BearerToken,
	}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding the kubeconfig: %w", err)
	}
	return out, nil
}

// WriteKubeconfig writes Kubeconfig to path, for kubectl and other tools
// (`KUBECONFIG=path kubectl get promises`). The file holds an administrator's
// private key, so it is written with mode 0600, and it is written to a
// temporary file and renamed so that a reader never sees half a file.
func (cp *ControlPlane) WriteKubeconfig(path string) error {
	data, err := cp.Kubeconfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	// CreateTemp already uses 0600; the deferred Remove is a no-op after a
	// successful rename.
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}
