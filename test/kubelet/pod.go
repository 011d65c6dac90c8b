package kubelet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// rootCAConfigMap is the ConfigMap Kubernetes publishes in every namespace
// with the cluster's CA; the test control plane has no controller that
// publishes it, so the kubelet serves the CA it was given.
const rootCAConfigMap = "kube-root-ca.crt"

// Termination messages are cut where the kubelet cuts them.
const (
	maxTerminationMessage = 4096
	fallbackLogLines      = 80
	fallbackLogBytes      = 2048
)

// podRun runs one pod.
type podRun struct {
	k      *Kubelet
	pod    *corev1.Pod
	log    func(format string, args ...any)
	record func(ContainerRun)

	mu     sync.Mutex
	status corev1.PodStatus
	// dir holds the pod's volumes and termination-message files.
	dir     string
	volumes map[string]hostVolume
}

type hostVolume struct {
	path     string
	readOnly bool
}

// errUnsupported marks a spec the test kubelet does not implement.
var errUnsupported = errors.New("not supported by the test kubelet")

// run runs the pod's init containers in order, then its containers side by
// side, writing the pod status as it goes, and reports whether every
// container succeeded.
func (p *podRun) run(ctx context.Context) bool {
	now := metav1.Now()
	p.status = corev1.PodStatus{Phase: corev1.PodPending, StartTime: &now, HostIP: "127.0.0.1", PodIP: "127.0.0.1"}
	for _, c := range p.pod.Spec.InitContainers {
		p.status.InitContainerStatuses = append(p.status.InitContainerStatuses, waiting(c, "PodInitializing", ""))
	}
	for _, c := range p.pod.Spec.Containers {
		p.status.ContainerStatuses = append(p.status.ContainerStatuses, waiting(c, "PodInitializing", ""))
	}
	p.writeStatus()
	defer func() {
		if p.dir != "" {
			if err := os.RemoveAll(p.dir); err != nil {
				p.log("removing the pod's folder: %v", err)
			}
		}
	}()
	if err := p.prepareVolumes(ctx); err != nil {
		p.log("preparing volumes: %v", err)
		p.failAll(ctx, "CreateContainerConfigError", err.Error())
		return false
	}
	for i, c := range p.pod.Spec.InitContainers {
		if !p.runContainer(ctx, c, &p.status.InitContainerStatuses[i]) {
			p.finish(corev1.PodFailed)
			return false
		}
	}
	p.mu.Lock()
	p.status.Phase = corev1.PodRunning
	p.mu.Unlock()
	var wg sync.WaitGroup
	results := make([]bool, len(p.pod.Spec.Containers))
	for i, c := range p.pod.Spec.Containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = p.runContainer(ctx, c, &p.status.ContainerStatuses[i])
		}()
	}
	wg.Wait()
	for _, ok := range results {
		if !ok {
			p.finish(corev1.PodFailed)
			return false
		}
	}
	p.finish(corev1.PodSucceeded)
	return true
}

func waiting(c corev1.Container, reason, message string) corev1.ContainerStatus {
	return corev1.ContainerStatus{
		Name: c.Name, Image: c.Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
	}
}

// failAll marks the first container that has not run as unable to start,
// as the kubelet does for a pod whose volumes cannot be set up, and waits
// for the deadline: a real pod would stay pending too.
func (p *podRun) failAll(ctx context.Context, reason, message string) {
	p.mu.Lock()
	if len(p.status.InitContainerStatuses) > 0 {
		p.status.InitContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
	} else if len(p.status.ContainerStatuses) > 0 {
		p.status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
	}
	p.mu.Unlock()
	p.writeStatus()
	<-ctx.Done()
}

func (p *podRun) finish(phase corev1.PodPhase) {
	p.mu.Lock()
	p.status.Phase = phase
	p.mu.Unlock()
	p.writeStatus()
}

// writeStatus writes the pod's status as the kubelet sees it. It uses the
// kubelet's context: a run stopped by its deadline still reports how.
func (p *podRun) writeStatus() {
	p.mu.Lock()
	status := *p.status.DeepCopy()
	p.mu.Unlock()
	ctx := p.k.ctx
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := p.k.cs.CoreV1().Pods(p.pod.Namespace).Get(ctx, p.pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = status
		_, err = p.k.cs.CoreV1().Pods(p.pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		p.log("writing the pod's status: %v", err)
	}
}

// runContainer runs one container to its end, keeping its status in st.
func (p *podRun) runContainer(ctx context.Context, c corev1.Container, st *corev1.ContainerStatus) bool {
	args, termFile, err := p.dockerArgs(ctx, c)
	if err != nil {
		p.log("container %s: %v", c.Name, err)
		p.mu.Lock()
		st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}}
		p.mu.Unlock()
		p.writeStatus()
		<-ctx.Done()
		return false
	}
	if reason, msg := p.checkImage(ctx, c); reason != "" {
		p.log("container %s: %s: %s", c.Name, reason, msg)
		p.mu.Lock()
		st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
		p.mu.Unlock()
		p.writeStatus()
		<-ctx.Done()
		return false
	}
	// Create, then start: a container is only removable once the engine
	// has made it, and `docker run` stopped halfway leaves one behind.
	name := args[containerNameArg]
	if out, err := exec.Command(p.k.opts.Docker, args...).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("docker create: %v: %s", err, bytes.TrimSpace(out))
		p.log("container %s: %s", c.Name, msg)
		p.mu.Lock()
		st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: msg}}
		p.mu.Unlock()
		p.writeStatus()
		<-ctx.Done()
		return false
	}
	defer func() { _ = exec.Command(p.k.opts.Docker, "rm", "-f", name).Run() }()
	started := metav1.Now()
	p.mu.Lock()
	st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	st.Started = new(true)
	st.ContainerID = "docker://" + name
	p.mu.Unlock()
	p.writeStatus()

	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, p.k.opts.Docker, "start", "--attach", name)
	cmd.Stdout, cmd.Stderr = &out, &out
	// Killing the CLI does not stop the container: remove it by name.
	cmd.Cancel = func() error {
		_ = exec.Command(p.k.opts.Docker, "rm", "-f", name).Run()
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &exitErr):
		code = exitErr.ExitCode()
	default:
		code = 128
	}
	if ctx.Err() != nil && runErr != nil {
		// Stopped by the deadline or the Job's deletion: SIGKILL's code.
		code = 137
	}
	p.log("container %s exited %d:\n%s", c.Name, code, indent(out.String()))
	p.record(ContainerRun{Name: c.Name, Image: c.Image, ExitCode: code, DockerArgs: args})

	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	msg := terminationMessage(termFile, out.Bytes(), code, c.TerminationMessagePolicy)
	p.mu.Lock()
	st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: int32(code), Reason: reason, Message: msg, StartedAt: started, FinishedAt: metav1.Now(),
		ContainerID: st.ContainerID,
	}}
	st.Started = new(false)
	st.Ready = false
	p.mu.Unlock()
	p.writeStatus()
	return code == 0 && ctx.Err() == nil
}

// terminationMessage is what Kubernetes reports: the container's
// termination-log file, or, with FallbackToLogsOnError, the end of its log
// when it failed without writing one.
func terminationMessage(file string, logs []byte, code int, policy corev1.TerminationMessagePolicy) string {
	data, _ := os.ReadFile(file)
	if len(bytes.TrimSpace(data)) == 0 && code != 0 && policy == corev1.TerminationMessageFallbackToLogsOnError {
		lines := bytes.Split(bytes.TrimRight(logs, "\n"), []byte("\n"))
		if len(lines) > fallbackLogLines {
			lines = lines[len(lines)-fallbackLogLines:]
		}
		data = bytes.Join(lines, []byte("\n"))
		if len(data) > fallbackLogBytes {
			data = data[len(data)-fallbackLogBytes:]
		}
	}
	if len(data) > maxTerminationMessage {
		data = data[:maxTerminationMessage]
	}
	return string(data)
}

// checkImage reports why the image cannot start, as the kubelet's waiting
// reasons: the image is missing (nothing is pulled), or the pod asks for a
// non-root user and the image would run as root.
func (p *podRun) checkImage(ctx context.Context, c corev1.Container) (reason, message string) {
	out, err := exec.CommandContext(ctx, p.k.opts.Docker, "image", "inspect", "--format", "{{.Config.User}}", c.Image).Output()
	if err != nil {
		return "ErrImageNeverPull", fmt.Sprintf("Container image %q is not present with pull policy of Never (the test kubelet never pulls: build it first)", c.Image)
	}
	user := strings.TrimSpace(string(out))
	uid, _ := p.runAs(c)
	if nonRoot(p.pod, c) && uid == nil && (user == "" || user == "0" || user == "root" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:")) {
		return "CreateContainerConfigError", "container has runAsNonRoot and image will run as root"
	}
	return "", ""
}

func nonRoot(pod *corev1.Pod, c corev1.Container) bool {
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		return *c.SecurityContext.RunAsNonRoot
	}
	return pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.RunAsNonRoot != nil && *pod.Spec.SecurityContext.RunAsNonRoot
}

// runAs is the container's uid and gid, the container's security context
// winning over the pod's.
func (p *podRun) runAs(c corev1.Container) (uid, gid *int64) {
	if ps := p.pod.Spec.SecurityContext; ps != nil {
		uid, gid = ps.RunAsUser, ps.RunAsGroup
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			uid = cs.RunAsUser
		}
		if cs.RunAsGroup != nil {
			gid = cs.RunAsGroup
		}
	}
	return uid, gid
}

// containerNameArg is the index of the container's name in dockerArgs.
const containerNameArg = 2

// dockerArgs maps a container of the pod to `docker create` arguments, and
// returns the host file that receives its termination message.
func (p *podRun) dockerArgs(ctx context.Context, c corev1.Container) ([]string, string, error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, "", err
	}
	name := "promised-kubelet-" + p.pod.Name + "-" + c.Name + "-" + hex.EncodeToString(suffix)
	args := []string{"create", "--name", name, "--pull", "never", "--network", "host",
		"--label", "promised.dev/test-kubelet=" + p.pod.Namespace + "." + p.pod.Name}
	if uid, gid := p.runAs(c); uid != nil {
		user := strconv.FormatInt(*uid, 10)
		if gid != nil {
			user += ":" + strconv.FormatInt(*gid, 10)
		}
		args = append(args, "--user", user)
	}
	if ps := p.pod.Spec.SecurityContext; ps != nil {
		if ps.FSGroup != nil {
			args = append(args, "--group-add", strconv.FormatInt(*ps.FSGroup, 10))
		}
		for _, g := range ps.SupplementalGroups {
			args = append(args, "--group-add", strconv.FormatInt(g, 10))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			args = append(args, "--read-only")
		}
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			args = append(args, "--security-opt", "no-new-privileges")
		}
		if sc.Privileged != nil && *sc.Privileged {
			args = append(args, "--privileged")
		}
		if sc.Capabilities != nil {
			for _, cap := range sc.Capabilities.Drop {
				args = append(args, "--cap-drop", string(cap))
			}
			for _, cap := range sc.Capabilities.Add {
				args = append(args, "--cap-add", string(cap))
			}
		}
	}
	if mem, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		args = append(args, "--memory", strconv.FormatInt(mem.Value(), 10))
	}
	if cpu, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		args = append(args, "--cpus", strconv.FormatFloat(float64(cpu.MilliValue())/1000, 'f', 3, 64))
	}
	if c.WorkingDir != "" {
		args = append(args, "--workdir", c.WorkingDir)
	}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || m.SubPathExpr != "" {
			return nil, "", fmt.Errorf("volume mount %s: subPath is %w", m.Name, errUnsupported)
		}
		v, ok := p.volumes[m.Name]
		if !ok {
			return nil, "", fmt.Errorf("volume mount %s: no such volume", m.Name)
		}
		spec := v.path + ":" + m.MountPath
		if m.ReadOnly || v.readOnly {
			spec += ":ro"
		}
		args = append(args, "--volume", spec)
	}
	termPath := c.TerminationMessagePath
	if termPath == "" {
		termPath = corev1.TerminationMessagePathDefault
	}
	termFile := filepath.Join(p.dir, "termination-"+c.Name)
	if err := os.WriteFile(termFile, nil, 0o666); err != nil {
		return nil, "", err
	}
	// WriteFile's mode is filtered by the umask; the container's user must
	// be able to write it.
	if err := os.Chmod(termFile, 0o666); err != nil {
		return nil, "", err
	}
	args = append(args, "--volume", termFile+":"+termPath)

	env, err := p.env(ctx, c)
	if err != nil {
		return nil, "", err
	}
	vars := map[string]string{}
	for _, e := range env {
		vars[e.name] = e.value
		args = append(args, "--env", e.name+"="+e.value)
	}
	command := expandAll(c.Command, vars)
	if len(command) > 0 {
		args = append(args, "--entrypoint", command[0])
	}
	args = append(args, c.Image)
	if len(command) > 1 {
		args = append(args, command[1:]...)
	}
	args = append(args, expandAll(c.Args, vars)...)
	return args, termFile, nil
}

type envVar struct{ name, value string }

// env resolves the container's environment as the kubelet does: the
// service variables first, then the container's env in order, each value
// able to refer to the ones before it as $(NAME).
func (p *podRun) env(ctx context.Context, c corev1.Container) ([]envVar, error) {
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("envFrom is %w", errUnsupported)
	}
	out := []envVar{
		{"KUBERNETES_SERVICE_HOST", p.k.apiURL.Hostname()},
		{"KUBERNETES_SERVICE_PORT", p.k.apiURL.Port()},
	}
	vars := map[string]string{}
	for _, v := range out {
		vars[v.name] = v.value
	}
	for _, e := range c.Env {
		value := expand(e.Value, vars)
		if e.ValueFrom != nil {
			var err error
			if value, err = p.valueFrom(ctx, e.ValueFrom); err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		}
		vars[e.Name] = value
		out = append(out, envVar{e.Name, value})
	}
	return out, nil
}

func (p *podRun) valueFrom(ctx context.Context, src *corev1.EnvVarSource) (string, error) {
	switch {
	case src.FieldRef != nil:
		return p.field(src.FieldRef.FieldPath)
	case src.SecretKeyRef != nil:
		s, err := p.k.cs.CoreV1().Secrets(p.pod.Namespace).Get(ctx, src.SecretKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		v, ok := s.Data[src.SecretKeyRef.Key]
		if !ok {
			return "", fmt.Errorf("secret %s has no key %s", s.Name, src.SecretKeyRef.Key)
		}
		return string(v), nil
	case src.ConfigMapKeyRef != nil:
		cm, err := p.k.cs.CoreV1().ConfigMaps(p.pod.Namespace).Get(ctx, src.ConfigMapKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		v, ok := cm.Data[src.ConfigMapKeyRef.Key]
		if !ok {
			return "", fmt.Errorf("configmap %s has no key %s", cm.Name, src.ConfigMapKeyRef.Key)
		}
		return v, nil
	}
	return "", fmt.Errorf("this valueFrom is %w", errUnsupported)
}

// field resolves a downward-API field path against the pod.
func (p *podRun) field(path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.pod.Name, nil
	case "metadata.namespace":
		return p.pod.Namespace, nil
	case "metadata.uid":
		return string(p.pod.UID), nil
	case "spec.serviceAccountName":
		return p.pod.Spec.ServiceAccountName, nil
	case "spec.nodeName":
		return p.pod.Spec.NodeName, nil
	case "status.podIP", "status.hostIP":
		return "127.0.0.1", nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": p.pod.Labels, "metadata.annotations": p.pod.Annotations} {
		if rest, ok := strings.CutPrefix(path, prefix+"['"); ok {
			key, ok := strings.CutSuffix(rest, "']")
			if !ok {
				return "", fmt.Errorf("field path %q is malformed", path)
			}
			return m[key], nil
		}
	}
	return "", fmt.Errorf("field path %q is %w", path, errUnsupported)
}

// prepareVolumes makes a host folder for each of the pod's volumes:
// emptyDirs writable by any user (as Kubernetes makes them), Secrets,
// ConfigMaps and projections written out and mounted read-only.
func (p *podRun) prepareVolumes(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "promised-kubelet-")
	if err != nil {
		return err
	}
	p.dir = dir
	p.volumes = map[string]hostVolume{}
	for _, v := range p.pod.Spec.Volumes {
		path := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(path, 0o755); err != nil {
			return err
		}
		readOnly := true
		switch {
		case v.EmptyDir != nil:
			readOnly = false
			if err := os.Chmod(path, 0o777); err != nil {
				return err
			}
		case v.Secret != nil:
			err = p.writeSecret(ctx, path, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
		case v.ConfigMap != nil:
			err = p.writeConfigMap(ctx, path, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
		case v.Projected != nil:
			err = p.writeProjected(ctx, path, v.Projected)
		default:
			err = fmt.Errorf("this volume type is %w", errUnsupported)
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		p.volumes[v.Name] = hostVolume{path: path, readOnly: readOnly}
	}
	return nil
}

func (p *podRun) writeSecret(ctx context.Context, dir, name string, items []corev1.KeyToPath, mode *int32, optional *bool) error {
	s, err := p.k.cs.CoreV1().Secrets(p.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret %s: %w", name, err)
	}
	return writeKeys(dir, s.Data, items, mode)
}

func (p *podRun) writeConfigMap(ctx context.Context, dir, name string, items []corev1.KeyToPath, mode *int32, optional *bool) error {
	data := map[string][]byte{}
	cm, err := p.k.cs.CoreV1().ConfigMaps(p.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		for k, v := range cm.Data {
			data[k] = []byte(v)
		}
		for k, v := range cm.BinaryData {
			data[k] = v
		}
	case apierrors.IsNotFound(err) && name == rootCAConfigMap:
		data["ca.crt"] = p.k.ca
	case apierrors.IsNotFound(err) && optional != nil && *optional:
		return nil
	default:
		return fmt.Errorf("configmap %s: %w", name, err)
	}
	return writeKeys(dir, data, items, mode)
}

func (p *podRun) writeProjected(ctx context.Context, dir string, v *corev1.ProjectedVolumeSource) error {
	for _, src := range v.Sources {
		var err error
		switch {
		case src.Secret != nil:
			err = p.writeSecret(ctx, dir, src.Secret.Name, src.Secret.Items, v.DefaultMode, src.Secret.Optional)
		case src.ConfigMap != nil:
			err = p.writeConfigMap(ctx, dir, src.ConfigMap.Name, src.ConfigMap.Items, v.DefaultMode, src.ConfigMap.Optional)
		case src.ServiceAccountToken != nil:
			err = p.writeToken(ctx, dir, src.ServiceAccountToken, v.DefaultMode)
		case src.DownwardAPI != nil:
			err = p.writeDownward(dir, src.DownwardAPI.Items, v.DefaultMode)
		default:
			err = fmt.Errorf("this projection is %w", errUnsupported)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *podRun) writeDownward(dir string, items []corev1.DownwardAPIVolumeFile, mode *int32) error {
	for _, item := range items {
		if item.FieldRef == nil {
			return fmt.Errorf("downwardAPI %s: only fieldRef is %w", item.Path, errUnsupported)
		}
		value, err := p.field(item.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		if err := writeFile(dir, item.Path, []byte(value), mode); err != nil {
			return err
		}
	}
	return nil
}

// writeToken gets a token for the pod's ServiceAccount, bound to the pod,
// from the TokenRequest API, as the kubelet does.
func (p *podRun) writeToken(ctx context.Context, dir string, src *corev1.ServiceAccountTokenProjection, mode *int32) error {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.pod.Name, UID: p.pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	sa := p.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tok, err := p.k.cs.CoreV1().ServiceAccounts(p.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting a token for service account %s: %w", sa, err)
	}
	return writeFile(dir, src.Path, []byte(tok.Status.Token), mode)
}

func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, mode *int32) error {
	if len(items) == 0 {
		for k, v := range data {
			if err := writeFile(dir, k, v, mode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, item := range items {
		v, ok := data[item.Key]
		if !ok {
			return fmt.Errorf("no key %s", item.Key)
		}
		m := mode
		if item.Mode != nil {
			m = item.Mode
		}
		if err := writeFile(dir, item.Path, v, m); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dir, rel string, data []byte, mode *int32) error {
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	if !filepath.IsLocal(rel) {
		return fmt.Errorf("volume file path %q leaves the volume", rel)
	}
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		return err
	}
	return os.Chmod(p, perm)
}

// expand replaces $(NAME) with vars[NAME] where NAME is defined, and $$
// with $, as Kubernetes does in env values, command and args.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, vars map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, vars)
	}
	return out
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
