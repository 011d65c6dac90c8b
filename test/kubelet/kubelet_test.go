package kubelet_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"promised.dev/promised/test/controlplane"
	"promised.dev/promised/test/kubelet"
)

const probeImage = "promised.dev/test/kubelet-probe:v1"

var (
	cs  kubernetes.Interface
	kub *kubelet.Kubelet
	seq atomic.Int64
)

func TestMain(m *testing.M) {
	// Build the probe image while the control plane starts.
	built := make(chan error, 1)
	go func() { built <- buildProbe() }()
	os.Exit(controlplane.RunTests(runner(func() int {
		defer kub.Stop()
		return m.Run()
	}), controlplane.Options{}, func(cp *controlplane.ControlPlane) error {
		if err := <-built; err != nil {
			return err
		}
		var err error
		if cs, err = kubernetes.NewForConfig(cp.Config); err != nil {
			return err
		}
		logf := func(string, ...any) {}
		if os.Getenv("PROMISED_TEST_LOG") != "" {
			logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
		}
		kub, err = kubelet.Start(kubelet.Options{Config: cp.Config, Logf: logf})
		return err
	}))
}

type runner func() int

func (r runner) Run() int { return r() }

func buildProbe() error {
	if err := kubelet.CheckDocker(""); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kubelet-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "probe")
	ctx := context.Background()
	if err := kubelet.BuildBinary(ctx, "./internal/probe", bin); err != nil {
		return err
	}
	return kubelet.BuildImage(ctx, "", bin, probeImage)
}

// namespace creates a fresh namespace with a ServiceAccount "runner".
func namespace(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ns := fmt.Sprintf("kubelet-%d", seq.Add(1))
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "runner"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	return ns
}

func probeJob(ns, name string, init []corev1.Container, main corev1.Container) *batchv1.Job {
	zero := int32(0)
	uid := int64(1234)
	no := false
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: &zero,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "probe"}},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           "runner",
					AutomountServiceAccountToken: &no,
					SecurityContext:              &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
					InitContainers:               init,
					Containers:                   []corev1.Container{main},
				},
			},
		},
	}
}

// waitFinished waits for the Job's Complete or Failed condition and
// returns the Job and its pod.
func waitFinished(t *testing.T, ns, name string) (*batchv1.Job, *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	var job *batchv1.Job
	require.Eventually(t, func() bool {
		var err error
		job, err = cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		for _, c := range job.Status.Conditions {
			if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	}, time.Minute, 100*time.Millisecond)
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1)
	return job, &pods.Items[0]
}

func condition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if job.Status.Conditions[i].Type == t {
			return &job.Status.Conditions[i]
		}
	}
	return nil
}

func TestRunsThePodSpec(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "input"}, Data: map[string][]byte{"greeting": []byte("hello")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	exp := int64(3607)
	ro := true
	job := probeJob(ns, "spec", []corev1.Container{{
		Name: "report", Image: probeImage, Args: []string{"report"},
		Env: []corev1.EnvVar{
			{Name: "PROBE_ENV", Value: "LITERAL,EXPANDED,JOB_UID,KUBERNETES_SERVICE_HOST"},
			{Name: "PROBE_FILES", Value: "/in/greeting,/sa/namespace"},
			{Name: "PROBE_WHOAMI", Value: "1"},
			{Name: "LITERAL", Value: "plain"},
			{Name: "EXPANDED", Value: "$(LITERAL)-and-$$(LITERAL)"},
			{Name: "JOB_UID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['" + batchv1.ControllerUidLabel + "']"}}},
		},
		SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &ro},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "in", MountPath: "/in", ReadOnly: true},
			{Name: "sa", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
			{Name: "sa", MountPath: "/sa", ReadOnly: true},
			{Name: "work", MountPath: "/work"},
		},
	}, {
		// command replaces the image's entrypoint.
		Name: "write", Image: probeImage, Command: []string{"/probe", "sleep"}, Args: []string{"10ms"},
		VolumeMounts: []corev1.VolumeMount{{Name: "work", MountPath: "/work"}},
	}}, corev1.Container{Name: "main", Image: probeImage, Args: []string{"report"}})
	job.Spec.Template.Spec.Volumes = []corev1.Volume{
		{Name: "in", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "input"}}},
		{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "sa", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
		}}}},
	}
	created, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)

	done, pod := waitFinished(t, ns, "spec")
	require.NotNil(t, condition(done, batchv1.JobComplete), "conditions: %+v", done.Status.Conditions)
	require.EqualValues(t, 1, done.Status.Succeeded)
	require.Equal(t, corev1.PodSucceeded, pod.Status.Phase)
	report := pod.Status.InitContainerStatuses[0].State.Terminated.Message
	for _, want := range []string{
		"env LITERAL=plain", "env EXPANDED=plain-and-$(LITERAL)", "env JOB_UID=" + string(created.UID),
		"env KUBERNETES_SERVICE_HOST=127.0.0.1", "file /in/greeting=hello", "file /sa/namespace=" + ns,
		"user=system:serviceaccount:" + ns + ":runner", "writing to /: open /probe-root-write: read-only file system", "uid=1234 gid=1234",
	} {
		require.Contains(t, report, want)
	}
	run, ok := kub.RunOf(ns, "spec")
	require.True(t, ok)
	require.Len(t, run.Containers, 3)
	require.Equal(t, []string{"report", "write", "main"}, []string{run.Containers[0].Name, run.Containers[1].Name, run.Containers[2].Name})
	// Without readOnlyRootFilesystem, only the file system's permissions
	// stop uid 1234.
	require.Contains(t, pod.Status.ContainerStatuses[0].State.Terminated.Message, "writing to /: open /probe-root-write: permission denied")
}

func TestFailedContainer(t *testing.T) {
	ns := namespace(t)
	job := probeJob(ns, "fails", []corev1.Container{
		{Name: "breaks", Image: probeImage, Args: []string{"fail", "3", "the disk is full"}, TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError},
		{Name: "never", Image: probeImage, Args: []string{"report"}},
	}, corev1.Container{Name: "main", Image: probeImage, Args: []string{"report"}})
	_, err := cs.BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{})
	require.NoError(t, err)

	done, pod := waitFinished(t, ns, "fails")
	failed := condition(done, batchv1.JobFailed)
	require.NotNil(t, failed)
	require.Equal(t, batchv1.JobReasonBackoffLimitExceeded, failed.Reason)
	require.Equal(t, corev1.PodFailed, pod.Status.Phase)
	term := pod.Status.InitContainerStatuses[0].State.Terminated
	require.NotNil(t, term)
	require.EqualValues(t, 3, term.ExitCode)
	require.Equal(t, "the disk is full", term.Message)
	require.NotNil(t, pod.Status.InitContainerStatuses[1].State.Waiting, "a container after a failed one never starts")
}

func TestActiveDeadline(t *testing.T) {
	ns := namespace(t)
	deadline := int64(2)
	job := probeJob(ns, "slow", nil, corev1.Container{Name: "sleeps", Image: probeImage, Args: []string{"sleep", "1m"}})
	job.Spec.ActiveDeadlineSeconds = &deadline
	start := time.Now()
	_, err := cs.BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{})
	require.NoError(t, err)

	done, _ := waitFinished(t, ns, "slow")
	failed := condition(done, batchv1.JobFailed)
	require.NotNil(t, failed)
	require.Equal(t, batchv1.JobReasonDeadlineExceeded, failed.Reason)
	require.Less(t, time.Since(start), 30*time.Second)
}

func TestMissingImageWaits(t *testing.T) {
	ns := namespace(t)
	deadline := int64(2)
	job := probeJob(ns, "missing", nil, corev1.Container{Name: "ghost", Image: "promised.dev/test/no-such-image:v0"})
	job.Spec.ActiveDeadlineSeconds = &deadline
	_, err := cs.BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{})
	require.NoError(t, err)

	done, pod := waitFinished(t, ns, "missing")
	require.Equal(t, batchv1.JobReasonDeadlineExceeded, condition(done, batchv1.JobFailed).Reason)
	w := pod.Status.ContainerStatuses[0].State.Waiting
	require.NotNil(t, w)
	require.Equal(t, "ErrImageNeverPull", w.Reason)
	require.True(t, strings.Contains(w.Message, "no-such-image"))
}

func TestDeletedJobStopsItsContainersAndPod(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	job := probeJob(ns, "deleted", nil, corev1.Container{Name: "sleeps", Image: probeImage, Args: []string{"sleep", "1m"}})
	created, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)
	sel := metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(created.UID)}
	require.Eventually(t, func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, sel)
		require.NoError(t, err)
		return len(pods.Items) == 1 && len(pods.Items[0].Status.ContainerStatuses) == 1 && pods.Items[0].Status.ContainerStatuses[0].State.Running != nil
	}, 30*time.Second, 50*time.Millisecond)

	bg := metav1.DeletePropagationBackground
	require.NoError(t, cs.BatchV1().Jobs(ns).Delete(ctx, "deleted", metav1.DeleteOptions{PropagationPolicy: &bg}))
	require.Eventually(t, func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, sel)
		require.NoError(t, err)
		return len(pods.Items) == 0
	}, 30*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		run, ok := kub.RunOf(ns, "deleted")
		return ok && len(run.Containers) == 1 && run.Containers[0].ExitCode == 137
	}, 30*time.Second, 50*time.Millisecond, "the container is stopped")
}
