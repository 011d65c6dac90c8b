package job

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
)

// unusedClient satisfies Options.Client for tests of pure functions that
// never call it; calling it panics on the nil interface.
type unusedClient struct{ client.Client }

func testParams(t *testing.T, change func(*Options)) jobParams {
	t.Helper()
	opts := Options{Client: unusedClient{}}
	if change != nil {
		change(&opts)
	}
	r, err := New(opts)
	require.NoError(t, err)
	return jobParams{
		Name: "team-configure-0a1b2c3d-abcdefgh", Namespace: "default", ServiceAccount: "promised-team-pipeline",
		Pipeline: v1alpha1.Pipeline{
			Metadata: v1alpha1.PipelineMetadata{Name: "configure", Labels: map[string]string{"team": "a", LabelRun: "spoofed"}, Annotations: map[string]string{"note": "n"}},
			Spec: v1alpha1.PipelineSpec{Containers: []v1alpha1.Container{
				{Name: "render", Image: "ghcr.io/example/render:v1", Command: []string{"/bin/render"}, Args: []string{"--fast"},
					Env: []v1alpha1.EnvVar{{Name: "MODE", Value: "x"}, {Name: contract.EnvPromiseName, Value: "spoofed"}}},
				{Name: "seal", Image: "ghcr.io/example/seal:v1", ImagePullPolicy: "IfNotPresent"},
			}},
		},
		Env:          contract.Env{Action: contract.ActionConfigure, Type: contract.TypeResource, PromiseName: "team", PipelineName: "configure", ObjectName: "payments", ObjectNamespace: "default"},
		Timeout:      90*time.Second + 500*time.Millisecond,
		InputSecrets: []string{"s-0", "s-1"},
		InputDigest:  "abc",
		Labels:       map[string]string{LabelRun: "team-configure-0a1b2c3d-abcdefgh", LabelPromise: "team"},
		Annotations:  map[string]string{annPromise: "team"},
		Options:      &r.opts,
	}
}

func envMap(c corev1.Container) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		out[e.Name] = e
	}
	return out
}

func mountPaths(c corev1.Container) map[string]bool {
	out := map[string]bool{}
	for _, m := range c.VolumeMounts {
		key := m.MountPath
		if m.ReadOnly {
			key += ":ro"
		}
		out[key] = true
	}
	return out
}

func TestJobSpecShape(t *testing.T) {
	j := jobSpec(testParams(t, nil))
	pod := j.Spec.Template.Spec

	require.EqualValues(t, 0, *j.Spec.BackoffLimit)
	require.EqualValues(t, 91, *j.Spec.ActiveDeadlineSeconds, "rounded up, never shorter than the timeout")
	require.EqualValues(t, 600, *j.Spec.TTLSecondsAfterFinished)
	require.Equal(t, corev1.RestartPolicyNever, pod.RestartPolicy)
	require.Equal(t, "promised-team-pipeline", pod.ServiceAccountName)
	require.False(t, *pod.AutomountServiceAccountToken)
	require.False(t, *pod.EnableServiceLinks)
	require.True(t, *pod.SecurityContext.RunAsNonRoot)
	require.EqualValues(t, DefaultRunAsUser, *pod.SecurityContext.RunAsUser)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)
	require.Equal(t, "a", j.Spec.Template.Labels["team"], "the pipeline's labels reach the pod")
	require.Equal(t, "team-configure-0a1b2c3d-abcdefgh", j.Spec.Template.Labels[LabelRun], "but cannot replace the runner's")
	require.Equal(t, "n", j.Spec.Template.Annotations["note"])

	var names []string
	for _, c := range pod.InitContainers {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{ReaderContainer, "render", "seal"}, names)
	require.Len(t, pod.Containers, 1)
	require.Equal(t, WriterContainer, pod.Containers[0].Name)

	render := pod.InitContainers[1]
	require.Equal(t, []string{"/bin/render"}, render.Command)
	require.Equal(t, []string{"--fast"}, render.Args)
	env := envMap(render)
	require.Equal(t, "x", env["MODE"].Value)
	require.Equal(t, "team", env[contract.EnvPromiseName].Value, "the contract's variables win")
	require.Equal(t, "payments", env[contract.EnvObjectName].Value)
	require.Equal(t, corev1.PullIfNotPresent, pod.InitContainers[2].ImagePullPolicy)
	require.Equal(t, corev1.TerminationMessageFallbackToLogsOnError, render.TerminationMessagePolicy)
	require.True(t, *render.SecurityContext.ReadOnlyRootFilesystem)
	require.False(t, *render.SecurityContext.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, render.SecurityContext.Capabilities.Drop)
	require.Equal(t, DefaultResources(), render.Resources)
	require.Equal(t, map[string]bool{
		"/kratix/input": true, "/kratix/output": true, "/kratix/metadata": true, "/kratix/previous": true, "/tmp": true,
	}, mountPaths(render), "no token: the pipeline asks for no permissions")

	reader := pod.InitContainers[0]
	require.Equal(t, map[string]bool{HandoffPath + ":ro": true, "/kratix/input": true, "/kratix/previous": true}, mountPaths(reader))
	require.Equal(t, "2", envMap(reader)[EnvInputChunks].Value)
	require.Equal(t, "abc", envMap(reader)[EnvInputDigest].Value)

	writer := pod.Containers[0]
	require.Equal(t, map[string]bool{
		HandoffPath + ":ro": true, ServiceAccountPath + ":ro": true, "/kratix/output:ro": true, "/kratix/metadata:ro": true,
	}, mountPaths(writer))
	uid := envMap(writer)[EnvJobUID]
	require.Equal(t, "metadata.labels['"+batchv1.ControllerUidLabel+"']", uid.ValueFrom.FieldRef.FieldPath)
	require.Equal(t, "team-configure-0a1b2c3d-abcdefgh", envMap(writer)[EnvRun].Value)
	require.Equal(t, "team", envMap(writer)[contract.EnvPromiseName].Value)

	var handoff *corev1.ProjectedVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == volHandoff {
			handoff = v.Projected
		}
	}
	require.NotNil(t, handoff)
	require.Equal(t, "s-0", handoff.Sources[0].Secret.Name)
	require.Equal(t, "s-1", handoff.Sources[1].Secret.Name)
}

func TestJobSpecOptions(t *testing.T) {
	res := corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}
	p := testParams(t, func(o *Options) {
		o.WritableRootFilesystem = true
		o.Resources = &res
		o.RunAsUser = 1000
		o.TTL = time.Hour
	})
	p.Pipeline.Spec.RBAC.Permissions = []v1alpha1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}
	j := jobSpec(p)
	pod := j.Spec.Template.Spec
	require.EqualValues(t, 3600, *j.Spec.TTLSecondsAfterFinished)
	require.EqualValues(t, 1000, *pod.SecurityContext.RunAsUser)
	render := pod.InitContainers[1]
	require.False(t, *render.SecurityContext.ReadOnlyRootFilesystem)
	require.True(t, *pod.InitContainers[0].SecurityContext.ReadOnlyRootFilesystem, "promised's own containers stay read-only")
	require.Equal(t, res, render.Resources)
	require.True(t, mountPaths(render)[ServiceAccountPath+":ro"], "a pipeline that asks for permissions gets the token")
}

func TestNewChecksOptions(t *testing.T) {
	_, err := New(Options{})
	require.ErrorContains(t, err, "needs a Kubernetes client")
	_, err = New(Options{Client: unusedClient{}, TTL: time.Second})
	require.ErrorContains(t, err, "shorter than")
	_, err = New(Options{Client: unusedClient{}, ChunkBytes: 2 << 20})
	require.ErrorContains(t, err, "1 MiB")
}

func TestCheckPipeline(t *testing.T) {
	c := func(name, policy string) v1alpha1.Container {
		return v1alpha1.Container{Name: name, Image: "i", ImagePullPolicy: policy}
	}
	p := func(cs ...v1alpha1.Container) v1alpha1.Pipeline {
		return v1alpha1.Pipeline{Spec: v1alpha1.PipelineSpec{Containers: cs}}
	}
	require.NoError(t, checkPipeline(p(c("a", ""), c("b", "Always"))))
	require.ErrorContains(t, checkPipeline(p()), "no containers")
	require.ErrorContains(t, checkPipeline(p(c(ReaderContainer, ""))), "reserved")
	require.ErrorContains(t, checkPipeline(p(c("a", ""), c("a", ""))), "used twice")
	require.ErrorContains(t, checkPipeline(p(c("a", "Sometimes"))), `imagePullPolicy "Sometimes"`)
}

func testPod(init, main []corev1.ContainerStatus) *corev1.Pod {
	pod := &corev1.Pod{}
	for _, s := range init {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: s.Name, Image: s.Name + ":v1"})
	}
	for _, s := range main {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: s.Name, Image: s.Name + ":v1"})
	}
	// The kubelet lists statuses in no particular order.
	pod.Status.InitContainerStatuses = append([]corev1.ContainerStatus(nil), init...)
	slices.Reverse(pod.Status.InitContainerStatuses)
	pod.Status.ContainerStatuses = main
	return pod
}

func status(name string, st corev1.ContainerState) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, State: st}
}

var (
	done    = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	running = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	pending = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
)

func TestFailedContainer(t *testing.T) {
	failed := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error", Message: "  no such template\n"}}
	err := failedContainer(testPod(
		[]corev1.ContainerStatus{status("reader", done), status("render", failed), status("seal", pending)},
		[]corev1.ContainerStatus{status("writer", pending)},
	))
	var pe *pipelines.Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "render", pe.Container)
	require.Equal(t, "render:v1", pe.Image)
	require.EqualError(t, pe.Err, "exited with code 2 (Error): no such template")

	oom := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}
	err = failedContainer(testPod([]corev1.ContainerStatus{status("reader", done)}, []corev1.ContainerStatus{status("writer", oom)}))
	require.ErrorContains(t, err, `container "writer" (image writer:v1), exited with code 137 (OOMKilled)`)

	require.NoError(t, failedContainer(testPod([]corev1.ContainerStatus{status("reader", done)}, []corev1.ContainerStatus{status("writer", running)})))
}

func TestWithRunning(t *testing.T) {
	timedOut := fmt.Errorf("%w after 5m0s", ErrTimeout)
	pullFailed := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}
	killed := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error"}}
	for name, c := range map[string]struct {
		pod  *corev1.Pod
		want string
	}{
		"running":  {testPod([]corev1.ContainerStatus{status("reader", done), status("render", running)}, nil), `container "render" (image render:v1), timed out after 5m0s (it was running)`},
		"waiting":  {testPod([]corev1.ContainerStatus{status("reader", done), status("render", pullFailed)}, nil), `container "render" (image render:v1), timed out after 5m0s (it was waiting: ImagePullBackOff: Back-off pulling image)`},
		"killed":   {testPod([]corev1.ContainerStatus{status("reader", done), status("render", killed)}, nil), `container "render" (image render:v1), timed out after 5m0s (it was stopped with exit code 137)`},
		"starting": {testPod([]corev1.ContainerStatus{status("reader", pending)}, nil), "timed out after 5m0s"},
		"no pod":   {nil, "timed out after 5m0s"},
	} {
		err := withRunning(timedOut, c.pod)
		require.ErrorIs(t, err, ErrTimeout, name)
		require.EqualError(t, err, c.want, name)
	}
}
