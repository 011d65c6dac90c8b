package kubelet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildBinary builds the Go package pkg (an import path or a path relative
// to the working directory) into out as a static binary (CGO_ENABLED=0),
// which is what a FROM scratch image can run.
func BuildBinary(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return nil
}

// BuildImage builds a FROM scratch image tagged tag holding binary, run as
// uid 65532 with entrypoint [binary, entrypointArgs...]: the shape of
// promised's built-in stage images.
func BuildImage(ctx context.Context, docker, binary, tag string, entrypointArgs ...string) error {
	if docker == "" {
		docker = "docker"
	}
	if err := CheckDocker(docker); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "promised-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	data, err := os.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("building image %s: %w", tag, err)
	}
	name := filepath.Base(binary)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
		return fmt.Errorf("building image %s: %w", tag, err)
	}
	entry := []string{fmt.Sprintf("%q", "/"+name)}
	for _, a := range entrypointArgs {
		entry = append(entry, fmt.Sprintf("%q", a))
	}
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s /%s\nUSER 65532:65532\nENTRYPOINT [%s]\n", name, name, strings.Join(entry, ", "))
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return fmt.Errorf("building image %s: %w", tag, err)
	}
	if out, err := exec.CommandContext(ctx, docker, "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("docker build %s: %w: %s", tag, err, out)
	}
	return nil
}
