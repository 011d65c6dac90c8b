// Package kubelet plays the kubelet, and the Job controller's part that
// makes pods, for a control plane that has neither (test/controlplane is a
// kube-apiserver and etcd only). It watches Jobs, creates each new Job's
// pod, runs the pod's init containers and containers in order with Docker
// and writes the pod's and the Job's status the way Kubernetes would, so
// that a test exercises the Job spec itself: its env, command, args,
// emptyDir, Secret, ConfigMap and projected volumes, service-account
// token, security context, resource limits and activeDeadlineSeconds.
//
// Containers run with --network host and reach the control plane at
// 127.0.0.1 through KUBERNETES_SERVICE_HOST/PORT, with a real token from
// the TokenRequest API, so RBAC checks what they do. Images must already
// be in the local Docker engine (BuildImage makes them); nothing is
// pulled.
//
// What it does not do, it refuses with a pod failure that says so, rather
// than run something other than what the spec asks for.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// ErrNoDocker is returned (wrapped) when the docker CLI or engine is
// missing. Its text says how to get them; tests fail with it rather than
// skip.
var ErrNoDocker = errors.New("the test kubelet runs containers with Docker: install the docker CLI and engine (`make deps`, or apt-get install docker.io) and start the engine (service docker start)")

// Options configure Start.
type Options struct {
	// Config connects to the control plane as an administrator.
	Config *rest.Config
	// Docker is the docker CLI; "docker" when empty.
	Docker string
	// Logf receives what the kubelet does and every container's output;
	// nothing when nil.
	Logf func(format string, args ...any)
}

// Kubelet runs the pods of the control plane's Jobs until Stop.
type Kubelet struct {
	opts   Options
	cs     kubernetes.Interface
	apiURL *url.URL
	ca     []byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	started map[types.UID]bool
	running map[types.UID]context.CancelFunc
	runs    []Run
}

// Run is what the kubelet did for one Job.
type Run struct {
	// Job is the Job as the kubelet first saw it.
	Job *batchv1.Job
	// Pod is the pod it created for the Job.
	Pod string
	// Containers ran in this order.
	Containers []ContainerRun
}

// ContainerRun is one container the kubelet started.
type ContainerRun struct {
	Name     string
	Image    string
	ExitCode int
	// DockerArgs is the full `docker create` command line, so tests can check
	// how the spec was mapped.
	DockerArgs []string
}

// CheckDocker returns an error wrapping ErrNoDocker unless the docker CLI
// is installed and its engine answers.
func CheckDocker(docker string) error {
	if docker == "" {
		docker = "docker"
	}
	if _, err := exec.LookPath(docker); err != nil {
		return fmt.Errorf("%w (%v)", ErrNoDocker, err)
	}
	if out, err := exec.Command(docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Errorf("%w (docker info: %v: %s)", ErrNoDocker, err, out)
	}
	return nil
}

// Start checks Docker, starts watching Jobs and returns once the watch has
// synced. Stop it before stopping the control plane.
func Start(opts Options) (*Kubelet, error) {
	if opts.Docker == "" {
		opts.Docker = "docker"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := CheckDocker(opts.Docker); err != nil {
		return nil, err
	}
	apiURL, err := url.Parse(opts.Config.Host)
	if err != nil || apiURL.Port() == "" {
		return nil, fmt.Errorf("the control plane's address %q has no port: %v", opts.Config.Host, err)
	}
	if host := apiURL.Hostname(); net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		return nil, fmt.Errorf("the control plane's address %q is not a loopback IP that containers on the host network can reach", opts.Config.Host)
	}
	ca := opts.Config.CAData
	if len(ca) == 0 && opts.Config.CAFile != "" {
		if ca, err = os.ReadFile(opts.Config.CAFile); err != nil {
			return nil, fmt.Errorf("reading the control plane's CA: %w", err)
		}
	}
	// client-go's default of 5 queries a second would make a busy test
	// suite's pods wait on the kubelet's own throttle.
	cfg := rest.CopyConfig(opts.Config)
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the control plane: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{
		opts: opts, cs: cs, apiURL: apiURL, ca: ca, ctx: ctx, cancel: cancel,
		started: map[types.UID]bool{}, running: map[types.UID]context.CancelFunc{},
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Batch().V1().Jobs().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.maybeStart(obj) },
		UpdateFunc: func(_, obj any) { k.maybeStart(obj) },
		DeleteFunc: k.deleted,
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("watching Jobs: %w", err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		factory.Shutdown()
		return nil, errors.New("watching Jobs: the cache never synced")
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		<-ctx.Done()
		factory.Shutdown()
	}()
	return k, nil
}

// Stop stops every running container and waits for the kubelet's
// goroutines.
func (k *Kubelet) Stop() {
	k.cancel()
	k.wg.Wait()
}

// Runs returns what the kubelet has done so far, oldest first.
func (k *Kubelet) Runs() []Run {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]Run, len(k.runs))
	for i, r := range k.runs {
		out[i] = r.copy()
	}
	return out
}

func (r Run) copy() Run {
	r.Containers = append([]ContainerRun(nil), r.Containers...)
	return r
}

// RunOf returns the run of the named Job, if the kubelet has started it.
func (k *Kubelet) RunOf(namespace, name string) (Run, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range k.runs {
		if r.Job.Namespace == namespace && r.Job.Name == name {
			return r.copy(), true
		}
	}
	return Run{}, false
}

func (k *Kubelet) maybeStart(obj any) {
	job, ok := obj.(*batchv1.Job)
	if !ok || jobFinished(job) || (job.Spec.Suspend != nil && *job.Spec.Suspend) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.started[job.UID] || k.ctx.Err() != nil {
		return
	}
	k.started[job.UID] = true
	ctx, cancel := context.WithCancel(k.ctx)
	k.running[job.UID] = cancel
	index := len(k.runs)
	k.runs = append(k.runs, Run{Job: job.DeepCopy()})
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer cancel()
		k.runJob(ctx, job.DeepCopy(), index)
		k.mu.Lock()
		delete(k.running, job.UID)
		k.mu.Unlock()
	}()
}

// deleted stops a deleted Job's containers and deletes its pods, as the
// garbage collector would: there is none in the test control plane.
func (k *Kubelet) deleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	job, ok := obj.(*batchv1.Job)
	if !ok {
		return
	}
	k.mu.Lock()
	if cancel := k.running[job.UID]; cancel != nil {
		cancel()
	}
	k.mu.Unlock()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Grace period 0: the pod is bound to a node, so the API server
		// would otherwise wait for a kubelet to confirm its containers
		// stopped; this one stops them on its own.
		now := int64(0)
		err := k.cs.CoreV1().Pods(job.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &now},
			metav1.ListOptions{LabelSelector: batchv1.ControllerUidLabel + "=" + string(job.UID)})
		if err != nil {
			k.opts.Logf("kubelet: deleting the pods of deleted Job %s/%s: %v", job.Namespace, job.Name, err)
		}
	}()
}

func jobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// runJob is the Job controller and kubelet for one Job with one pod.
func (k *Kubelet) runJob(ctx context.Context, job *batchv1.Job, index int) {
	log := func(format string, args ...any) {
		k.opts.Logf("kubelet: job %s/%s: "+format, append([]any{job.Namespace, job.Name}, args...)...)
	}
	start := metav1.Now()
	pod, err := k.createPod(ctx, job)
	if err != nil {
		log("creating the pod: %v", err)
		k.finishJob(job, start, false, "PodCreateFailed", err.Error())
		return
	}
	k.mu.Lock()
	k.runs[index].Pod = pod.Name
	k.mu.Unlock()
	log("created pod %s", pod.Name)
	k.setJobStatus(job, func(s *batchv1.JobStatus) { s.StartTime = &start; s.Active = 1 })

	runCtx := ctx
	if d := job.Spec.ActiveDeadlineSeconds; d != nil {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithDeadline(ctx, start.Add(time.Duration(*d)*time.Second))
		defer cancel()
	}
	p := &podRun{k: k, pod: pod, log: log, record: func(c ContainerRun) {
		k.mu.Lock()
		k.runs[index].Containers = append(k.runs[index].Containers, c)
		k.mu.Unlock()
	}}
	ok := p.run(runCtx)
	switch {
	case ctx.Err() != nil:
		log("stopped: the Job was deleted or the kubelet stopped")
	case runCtx.Err() != nil:
		log("active deadline exceeded")
		k.finishJob(job, start, false, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline")
	case ok:
		k.finishJob(job, start, true, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods")
	default:
		k.finishJob(job, start, false, batchv1.JobReasonBackoffLimitExceeded, "Job has reached the specified backoff limit")
	}
}

// createPod creates the Job's pod from its template, as the Job controller
// does: named after the Job, labelled by the template, owned by the Job.
func (k *Kubelet) createPod(ctx context.Context, job *batchv1.Job) (*corev1.Pod, error) {
	controller := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: job.Name + "-", Namespace: job.Namespace,
			Labels: job.Spec.Template.Labels, Annotations: job.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: &controller,
			}},
		},
		Spec: *job.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = "promised-test-kubelet"
	return k.cs.CoreV1().Pods(job.Namespace).Create(ctx, pod, metav1.CreateOptions{})
}

// finishJob writes the Job's final status the way the Job controller
// does: the interim condition (SuccessCriteriaMet or FailureTarget), then
// the final one, with the counts the API server's validation expects.
func (k *Kubelet) finishJob(job *batchv1.Job, start metav1.Time, succeeded bool, reason, message string) {
	now := metav1.Now()
	k.setJobStatus(job, func(s *batchv1.JobStatus) {
		if s.StartTime == nil {
			s.StartTime = &start
		}
		s.Active = 0
		interim, final := batchv1.JobFailureTarget, batchv1.JobFailed
		if succeeded {
			interim, final = batchv1.JobSuccessCriteriaMet, batchv1.JobComplete
			s.Succeeded = 1
			s.CompletionTime = &now
		} else {
			s.Failed = 1
		}
		for _, t := range []batchv1.JobConditionType{interim, final} {
			s.Conditions = append(s.Conditions, batchv1.JobCondition{
				Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message,
				LastProbeTime: now, LastTransitionTime: now,
			})
		}
	})
}

// setJobStatus applies change to the Job's current status and writes it,
// retrying on conflicts. It uses the kubelet's own context, not the run's,
// so a run stopped by its deadline still reports it.
func (k *Kubelet) setJobStatus(job *batchv1.Job, change func(*batchv1.JobStatus)) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.cs.BatchV1().Jobs(job.Namespace).Get(k.ctx, job.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != job.UID {
			return apierrors.NewNotFound(batchv1.Resource("jobs"), job.Name)
		}
		change(&cur.Status)
		_, err = k.cs.BatchV1().Jobs(job.Namespace).UpdateStatus(k.ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && k.ctx.Err() == nil {
		k.opts.Logf("kubelet: job %s/%s: writing its status: %v", job.Namespace, job.Name, err)
	}
}
