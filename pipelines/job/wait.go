package job

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
)

// ErrTimeout is returned (wrapped) when a pipeline's Job does not finish
// within the pipeline's timeout.
var ErrTimeout = errors.New("timed out")

// wait returns the Job once it has succeeded, or an error saying why it
// failed or that it timed out. It watches the Job when the client can and
// polls as well, since a watch may end without telling.
func (r *Runner) wait(parent context.Context, job *batchv1.Job, timeout time.Duration) (*batchv1.Job, error) {
	timedOut := fmt.Errorf("%w after %s", ErrTimeout, timeout)
	ctx, cancel := context.WithTimeoutCause(parent, timeout, timedOut)
	defer cancel()
	events := r.watch(ctx, job)
	tick := time.NewTicker(r.opts.PollInterval)
	defer tick.Stop()
	key := client.ObjectKeyFromObject(job)
	for {
		current := &batchv1.Job{}
		err := r.get(parent, key, current)
		switch {
		case err == nil:
			if ok, cond := finished(current); cond != nil {
				if ok {
					return current, nil
				}
				return nil, r.failure(context.WithoutCancel(ctx), current, cond, timeout)
			}
		case ctx.Err() != nil:
		case transient(err):
			// A busy or restarting API server should not fail a pipeline
			// that is running fine; the timeout bounds how long we try.
			logr.FromContextOrDiscard(ctx).V(1).Info("cannot read the Job; trying again", "error", err.Error())
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("the Job %s was deleted before it finished: %w", key, err)
		default:
			return nil, fmt.Errorf("reading Job %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), timedOut) {
				// The pipeline's own context is done: describe the pod with
				// one of the caller's.
				return nil, r.timeoutError(context.WithoutCancel(ctx), job, timedOut)
			}
			return nil, fmt.Errorf("waiting for Job %s: %w", key, ctx.Err())
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		case <-tick.C:
		}
	}
}

// get reads obj under a bound of its own rather than the pipeline's
// timeout: near that deadline, client-go's rate limiter refuses to wait
// with an error that is neither the context's nor the API server's, and
// the timeout is the wait loop's to report.
func (r *Runner) get(ctx context.Context, key client.ObjectKey, obj client.Object) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return r.client.Get(ctx, key, obj)
}

// watch returns the events of job when the client can watch, nil (which
// blocks forever in a select) when it cannot. The channel closes when the
// watch ends.
func (r *Runner) watch(ctx context.Context, job *batchv1.Job) <-chan watch.Event {
	w, ok := r.client.(client.WithWatch)
	if !ok {
		return nil
	}
	wi, err := w.Watch(ctx, &batchv1.JobList{}, client.InNamespace(job.Namespace), client.MatchingFields{"metadata.name": job.Name})
	if err != nil {
		logr.FromContextOrDiscard(ctx).V(1).Info("cannot watch the Job; polling it", "error", err.Error())
		return nil
	}
	go func() {
		<-ctx.Done()
		wi.Stop()
	}()
	return wi.ResultChan()
}

// finished reports whether the Job has ended, and how. The interim
// conditions SuccessCriteriaMet and FailureTarget already say how it will
// end; waiting for the final ones only waits for pods to terminate.
func finished(j *batchv1.Job) (succeeded bool, cond *batchv1.JobCondition) {
	for i := range j.Status.Conditions {
		c := &j.Status.Conditions[i]
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobFailed, batchv1.JobFailureTarget:
			return false, c
		case batchv1.JobComplete, batchv1.JobSuccessCriteriaMet:
			succeeded, cond = true, c
		}
	}
	return succeeded, cond
}

// failure explains a failed Job: the container that failed and its
// termination message where the pod status has them, the Job's condition
// otherwise.
func (r *Runner) failure(ctx context.Context, job *batchv1.Job, cond *batchv1.JobCondition, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pod, podErr := r.latestPod(ctx, job)
	if cond.Reason == batchv1.JobReasonDeadlineExceeded {
		return withRunning(fmt.Errorf("%w after %s (the Job's activeDeadlineSeconds)", ErrTimeout, timeout), pod)
	}
	if pod != nil {
		if err := failedContainer(pod); err != nil {
			return err
		}
	}
	msg := fmt.Sprintf("Job %s/%s failed: %s", job.Namespace, job.Name, cond.Reason)
	if cond.Message != "" {
		msg += ": " + cond.Message
	}
	if podErr != nil {
		return fmt.Errorf("%s (and reading its pod: %w)", msg, podErr)
	}
	return errors.New(msg)
}

// timeoutError says the pipeline timed out, and which container was
// running or waiting when it did.
func (r *Runner) timeoutError(ctx context.Context, job *batchv1.Job, timedOut error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pod, _ := r.latestPod(ctx, job)
	return withRunning(timedOut, pod)
}

// withRunning adds the container that had not finished to a timeout:
// the first, in the order they run, that had not succeeded.
func withRunning(err error, pod *corev1.Pod) error {
	if pod == nil {
		return err
	}
	for _, s := range orderedStatuses(pod) {
		var state string
		switch st := s.State; {
		case st.Terminated != nil && st.Terminated.ExitCode == 0:
			continue
		case st.Terminated != nil:
			state = fmt.Sprintf("it was stopped with exit code %d", st.Terminated.ExitCode)
		case st.Running != nil:
			state = "it was running"
		case st.Waiting != nil && st.Waiting.Reason != "" && st.Waiting.Reason != "PodInitializing":
			state = fmt.Sprintf("it was waiting: %s", st.Waiting.Reason)
			if st.Waiting.Message != "" {
				state += ": " + st.Waiting.Message
			}
		default:
			return err
		}
		return &pipelines.Error{Container: s.Name, Image: imageOf(pod, s.Name), Err: fmt.Errorf("%w (%s)", err, state)}
	}
	return err
}

// failedContainer returns the error of the first container of pod that
// ended unsuccessfully, in the order they ran.
func failedContainer(pod *corev1.Pod) error {
	for _, s := range orderedStatuses(pod) {
		t := s.State.Terminated
		if t == nil || t.ExitCode == 0 {
			continue
		}
		msg := fmt.Sprintf("exited with code %d", t.ExitCode)
		if t.Reason != "" {
			msg += " (" + t.Reason + ")"
		}
		if m := strings.TrimSpace(t.Message); m != "" {
			msg += ": " + m
		}
		return &pipelines.Error{Container: s.Name, Image: imageOf(pod, s.Name), Err: errors.New(msg)}
	}
	return nil
}

// orderedStatuses lists init containers' statuses in spec order, then the
// containers'.
func orderedStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	byName := map[string]corev1.ContainerStatus{}
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		byName[s.Name] = s
	}
	var out []corev1.ContainerStatus
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if s, ok := byName[c.Name]; ok {
			out = append(out, s)
		}
	}
	return out
}

func imageOf(pod *corev1.Pod, name string) string {
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == name {
			return c.Image
		}
	}
	return ""
}

// latestPod returns the Job's newest pod (with backoffLimit 0 there is one,
// unless the node lost it), or nil when there is none.
func (r *Runner) latestPod(ctx context.Context, job *batchv1.Job) (*corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := r.client.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)}); err != nil {
		return nil, fmt.Errorf("listing the pods of Job %s: %w", job.Name, err)
	}
	if len(pods.Items) == 0 {
		return nil, nil
	}
	sort.Slice(pods.Items, func(i, j int) bool {
		return pods.Items[j].CreationTimestamp.Before(&pods.Items[i].CreationTimestamp)
	})
	return &pods.Items[0], nil
}

// readOutput reads the ConfigMaps the run's writer created, checks that
// they are all there and were made with the run's key, and unpacks them
// into the workspace's output and metadata folders.
func (r *Runner) readOutput(ctx context.Context, rn *run, ws contract.Workspace) error {
	list := &corev1.ConfigMapList{}
	if err := r.client.List(ctx, list, client.InNamespace(rn.namespace), client.MatchingLabels{LabelRun: rn.name}); err != nil {
		return fmt.Errorf("reading the output of Job %s: %w", rn.name, err)
	}
	data, err := verifyChunks(list.Items, rn.key)
	if err != nil {
		return fmt.Errorf("reading the output of Job %s: %w", rn.name, err)
	}
	if err := unpack(bytes.NewReader(data), map[string]string{
		contract.OutputDir: ws.Output(), contract.MetadataDir: ws.Metadata(),
	}, unpackLimits{MaxBytes: r.opts.MaxHandoffBytes, MaxFiles: maxHandoffFiles}); err != nil {
		return fmt.Errorf("reading the output of Job %s: %w", rn.name, err)
	}
	return nil
}

// ErrHandback is returned (wrapped) when a Job's output ConfigMaps are
// missing, incomplete or not made with the run's key.
var ErrHandback = errors.New("the Job's output hand-back is not valid")

// verifyChunks joins output ConfigMaps in chunk order and checks the
// result's MAC under key.
func verifyChunks(cms []corev1.ConfigMap, key []byte) ([]byte, error) {
	if len(cms) == 0 {
		return nil, fmt.Errorf("%w: no output ConfigMaps (did the writer container run?)", ErrHandback)
	}
	chunks := map[int][]byte{}
	want, sum := -1, ""
	for _, cm := range cms {
		i, err := strconv.Atoi(cm.Labels[LabelChunk])
		if err != nil || i < 0 {
			return nil, fmt.Errorf("%w: ConfigMap %s has chunk label %q", ErrHandback, cm.Name, cm.Labels[LabelChunk])
		}
		n, err := strconv.Atoi(cm.Annotations[AnnotationChunks])
		if err != nil || n <= 0 || (want >= 0 && n != want) {
			return nil, fmt.Errorf("%w: ConfigMap %s says %q chunks", ErrHandback, cm.Name, cm.Annotations[AnnotationChunks])
		}
		if sum != "" && cm.Annotations[AnnotationMAC] != sum {
			return nil, fmt.Errorf("%w: ConfigMaps disagree on the output's MAC", ErrHandback)
		}
		if _, dup := chunks[i]; dup {
			return nil, fmt.Errorf("%w: chunk %d appears twice", ErrHandback, i)
		}
		want, sum = n, cm.Annotations[AnnotationMAC]
		chunks[i] = cm.BinaryData[outputChunkKey]
	}
	data, err := joinChunks(chunks, want)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandback, err)
	}
	if !hmac.Equal([]byte(mac(key, data)), []byte(sum)) {
		return nil, fmt.Errorf("%w: its MAC does not match this run's key", ErrHandback)
	}
	return data, nil
}

// outputChunkKey is the binaryData key of an output ConfigMap.
const outputChunkKey = "output.tar.gz"
