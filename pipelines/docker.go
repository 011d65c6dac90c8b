package pipelines

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
)

// Docker runs any pipeline image with the local Docker engine, the
// contract's folders bind-mounted at /kratix: how `promised render` runs
// images that are not built in, such as Kratix pipeline images.
type Docker struct {
	// Binary is the docker CLI; "docker" when empty.
	Binary string
	// Network is passed to --network; "none" when empty, since a render
	// should not depend on the network.
	Network string
}

// RunContainer implements ContainerRunner.
func (r Docker) RunContainer(ctx context.Context, c v1alpha1.Container, ws contract.Workspace, env map[string]string) error {
	bin := r.Binary
	if bin == "" {
		bin = "docker"
	}
	network := r.Network
	if network == "" {
		network = "none"
	}
	name, err := containerName()
	if err != nil {
		return err
	}
	args := []string{"run", "--rm", "--name", name, "--pull", "never", "--network", network,
		// The stage writes into our folders, so it runs as our user.
		"--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid())}
	for _, d := range []string{contract.InputDir, contract.OutputDir, contract.MetadataDir, contract.PreviousDir} {
		args = append(args, "-v", filepath.Join(ws.Root, d)+":"+contract.ContainerRoot+"/"+d)
	}
	for _, kv := range envList(env) {
		args = append(args, "-e", kv)
	}
	if len(c.Command) > 0 {
		args = append(args, "--entrypoint", c.Command[0])
	}
	args = append(args, c.Image)
	if len(c.Command) > 1 {
		args = append(args, c.Command[1:]...)
	}
	args = append(args, c.Args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	// Killing the CLI does not stop the container: remove it by name.
	cmd.Cancel = func() error {
		_ = exec.Command(bin, "rm", "-f", name).Run()
		return cmd.Process.Kill()
	}
	if err := runCommand(cmd); err != nil {
		return fmt.Errorf("docker run: %w", err)
	}
	return nil
}

func containerName() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("naming the container: %w", err)
	}
	return "promised-stage-" + hex.EncodeToString(b), nil
}
