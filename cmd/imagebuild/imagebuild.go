// Package imagebuild builds promised's container images with the local
// Docker engine: the controller image and one image per built-in stage.
//
// No base image can be pulled where promised is built, so nothing here
// compiles inside Docker: the Go binaries are built on the host, statically
// (CGO_ENABLED=0), and the Dockerfiles under cmd/ copy them onto an empty
// (scratch) image. Every stage image shares one binary, promised-stage,
// which holds every built-in stage; a stage's image only adds its name as
// the entrypoint's argument, so building N stages costs one binary and one
// base image plus N metadata-only layers.
//
// `make images` and `promised build` both call this package, so there is
// one way images are made.
package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/stage"
)

// Image references this package builds. Stage images are
// stage.Image(name), the references promises name in their pipelines.
const (
	// ControllerImage runs `promised controller` (config/manager).
	ControllerImage = "promised.dev/promised:" + stage.Version
	// StageBaseImage holds the promised-stage binary with no stage chosen;
	// every stage image is built FROM it.
	StageBaseImage = "promised.dev/promised-stage:" + stage.Version
)

// Files of the source tree the builds read, relative to its root.
const (
	ControllerDockerfile = "cmd/promised/Dockerfile"
	StageBaseDockerfile  = "cmd/promised-stage/Dockerfile"
	// StageDockerfile is the template of one stage's image; StagePlaceholder
	// in it is replaced by the stage's name.
	StageDockerfile = "cmd/promised-stage/stage.Dockerfile"
	// StagePlaceholder marks where a stage's name goes in StageDockerfile.
	// Dockerfiles do not expand build arguments in an exec-form ENTRYPOINT,
	// and a scratch image has no shell to expand them at run time, so the
	// name is written into the Dockerfile itself.
	StagePlaceholder = "STAGE_NAME"
)

// CABundleFile is the name under which a build context carries the CA
// certificates; the Dockerfiles copy it to /etc/ssl/certs, where Go's
// crypto/x509 looks on Linux. Without it a scratch image cannot verify
// the TLS certificate of a Git host, a NATS server or a database.
const CABundleFile = "ca-certificates.crt"

// caBundles are where Linux distributions keep the CA bundle; the first
// that exists is copied into images.
var caBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",             // openSUSE
	"/etc/ssl/cert.pem",                  // macOS, Alpine
}

// modulePath is the module whose source the builder needs.
const modulePath = "promised.dev/promised"

// Builder builds images from a promised source tree.
type Builder struct {
	// Source is the root of the promised module (holding go.mod).
	Source string
	// Docker is the docker CLI; "docker" when empty.
	Docker string
	// Go is the go command; "go" when empty.
	Go string
	// Log receives one line per step and the tools' output; nothing when nil.
	Log io.Writer
}

// FindSource returns the root of the promised module holding dir, or an
// error saying how to get there.
func FindSource(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("locating the promised source: %w", err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			if modfileModule(data) == modulePath {
				return d, nil
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("reading %s: %w", filepath.Join(d, "go.mod"), err)
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s is not inside the %s source tree: images are built from source, so run this from a checkout of promised (or pass its root)", abs, modulePath)
		}
	}
}

// modfileModule returns the module path a go.mod declares.
func modfileModule(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// CheckDocker returns an error with what to do when the docker CLI is
// missing or its engine is not running.
func (b *Builder) CheckDocker(ctx context.Context) error {
	bin := b.docker()
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("the docker CLI (%s) is not installed: install Docker (on Debian: apt-get install docker.io, or `make deps`) and start its engine: %w", bin, err)
	}
	out, err := exec.CommandContext(ctx, bin, "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("the Docker engine is not reachable (start it, e.g. `service docker start`, or set DOCKER_HOST): %s: %w", bytes.TrimSpace(out), err)
	}
	return nil
}

// BuildBinary compiles the main package pkg (such as "./cmd/promised")
// into out as a static binary: a scratch image has no C library to link
// against at run time.
func (b *Builder) BuildBinary(ctx context.Context, pkg, out string) error {
	b.logf(">> building %s (static, CGO_ENABLED=0)", pkg)
	// No -trimpath: it changes every package's build cache key, so the
	// first image build would recompile all of Kubernetes' client code
	// (minutes) instead of reusing what other CGO_ENABLED=0 builds cached.
	cmd := exec.CommandContext(ctx, b.goCmd(), "build", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = b.Source
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %s: %w", pkg, bytes.TrimSpace(output), err)
	}
	return nil
}

// Controller builds ControllerImage from the source tree.
func (b *Builder) Controller(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "promised-image-")
	if err != nil {
		return fmt.Errorf("creating the build context: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := b.BuildBinary(ctx, "./cmd/promised", filepath.Join(dir, "promised")); err != nil {
		return err
	}
	if err := copyCABundle(dir); err != nil {
		return err
	}
	return b.dockerBuild(ctx, ControllerImage, filepath.Join(b.Source, ControllerDockerfile), dir)
}

// StageBase builds StageBaseImage around the promised-stage binary at bin,
// or, when bin is empty, around one compiled from the source tree.
func (b *Builder) StageBase(ctx context.Context, bin string) error {
	dir, err := os.MkdirTemp("", "promised-image-")
	if err != nil {
		return fmt.Errorf("creating the build context: %w", err)
	}
	defer os.RemoveAll(dir)
	target := filepath.Join(dir, "promised-stage")
	if bin == "" {
		if err := b.BuildBinary(ctx, "./cmd/promised-stage", target); err != nil {
			return err
		}
	} else if err := copyFile(bin, target, 0o755); err != nil {
		return err
	}
	if err := copyCABundle(dir); err != nil {
		return err
	}
	return b.dockerBuild(ctx, StageBaseImage, filepath.Join(b.Source, StageBaseDockerfile), dir)
}

// Stages builds stage.Image(name) for each name FROM StageBaseImage, which
// must exist (see StageBase).
func (b *Builder) Stages(ctx context.Context, names []string) error {
	tpl, err := os.ReadFile(filepath.Join(b.Source, StageDockerfile))
	if err != nil {
		return fmt.Errorf("reading the stage image template: %w", err)
	}
	for _, name := range names {
		df, err := StageImageDockerfile(tpl, name)
		if err != nil {
			return err
		}
		// No context: the image only adds an entrypoint to the base.
		b.logf(">> building %s", stage.Image(name))
		cmd := exec.CommandContext(ctx, b.docker(), "build", "-q", "--build-arg", "BASE="+StageBaseImage, "-t", stage.Image(name), "-")
		cmd.Stdin = bytes.NewReader(df)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("docker build %s: %s: %w", stage.Image(name), bytes.TrimSpace(out), err)
		}
	}
	return nil
}

// stageName is what a stage's name may be: it becomes part of an image
// reference and is written into a Dockerfile.
var stageName = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// StageImageDockerfile fills the stage image template with a stage's name.
func StageImageDockerfile(template []byte, name string) ([]byte, error) {
	if !stageName.MatchString(name) {
		return nil, fmt.Errorf("stage name %q: want lowercase letters, digits and single dashes", name)
	}
	if !bytes.Contains(template, []byte(StagePlaceholder)) {
		return nil, fmt.Errorf("the stage image template has no %s to replace", StagePlaceholder)
	}
	return bytes.ReplaceAll(template, []byte(StagePlaceholder), []byte(name)), nil
}

// PromiseStages returns the built-in stages a promise's pipelines run
// (every workflow, configure and delete), sorted and unique, and the other
// images it names, which are not built from this source tree.
func PromiseStages(p *v1alpha1.Promise) (builtin, other []string) {
	seen := map[string]bool{}
	var all []v1alpha1.Pipeline
	for _, w := range []v1alpha1.WorkflowActions{p.Spec.Workflows.Promise, p.Spec.Workflows.Resource} {
		all = append(append(all, w.Configure...), w.Delete...)
	}
	for _, pl := range all {
		for _, c := range pl.Spec.Containers {
			if seen[c.Image] {
				continue
			}
			seen[c.Image] = true
			if name, ok := stage.BuiltinName(c.Image); ok {
				builtin = append(builtin, name)
			} else {
				other = append(other, c.Image)
			}
		}
	}
	sort.Strings(builtin)
	sort.Strings(other)
	return builtin, other
}

// Unregistered returns the names reg does not hold: stages a promise names
// whose code is not compiled into promised-stage, so their images would
// fail at once with "no stage in this binary".
func Unregistered(reg *stage.Registry, names []string) []string {
	var out []string
	for _, n := range names {
		if _, ok := reg.ByName(n); !ok {
			out = append(out, n)
		}
	}
	return out
}

func (b *Builder) dockerBuild(ctx context.Context, tag, dockerfile, contextDir string) error {
	b.logf(">> building %s", tag)
	cmd := exec.CommandContext(ctx, b.docker(), "build", "-q", "-f", dockerfile, "-t", tag, contextDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker build %s: %s: %w", tag, bytes.TrimSpace(out), err)
	}
	return nil
}

// copyCABundle puts the host's CA bundle into a build context.
func copyCABundle(dir string) error {
	for _, p := range caBundles {
		if _, err := os.Stat(p); err == nil {
			return copyFile(p, filepath.Join(dir, CABundleFile), 0o644)
		}
	}
	return fmt.Errorf("no CA bundle on this machine (looked at %s): install the ca-certificates package", strings.Join(caBundles, ", "))
}

func copyFile(from, to string, mode os.FileMode) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("reading %s: %w", from, err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", to, err)
	}
	return nil
}

func (b *Builder) docker() string {
	if b.Docker != "" {
		return b.Docker
	}
	return "docker"
}

func (b *Builder) goCmd() string {
	if b.Go != "" {
		return b.Go
	}
	return "go"
}

func (b *Builder) logf(format string, args ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, format+"\n", args...)
	}
}
