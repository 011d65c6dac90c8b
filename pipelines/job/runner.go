// Package job runs pipelines as Kubernetes Jobs, one Job per pipeline run,
// with Kratix's semantics: any image, the pipeline's containers run in
// order sharing the /kratix folders, under a ServiceAccount holding the
// permissions the pipeline asks for.
//
// The controller runs on the platform cluster, but the Job's pod may run on
// any of its nodes, so the workspace travels through the API server: the
// input in Secrets owned by the Job, unpacked by a reader init container,
// and the output in ConfigMaps the writer container creates with the pod's
// own ServiceAccount, authenticated with a per-run key the runner checks
// before it unpacks anything.
package job

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
)

// Stage names of the reader and writer, registered in cmd/builtin so that
// `promised-stage job-reader` and `promised-stage job-writer` are the
// entrypoints of their images.
const (
	ReaderStageName = "job-reader"
	WriterStageName = "job-writer"
)

// DefaultNamespace runs promise workflows (whose object, the Promise, has
// no namespace) and requests of cluster-scoped kinds.
const DefaultNamespace = "promised-system"

// Defaults of Options.
const (
	DefaultTTL          = 10 * time.Minute
	DefaultPollInterval = time.Second
	DefaultRunAsUser    = 65532
	// minTTL keeps Kubernetes' TTL controller from deleting a finished Job,
	// and the ConfigMaps it owns, before the runner has read them.
	minTTL = time.Minute
)

// DefaultResources are every container's requests and limits unless
// Options.Resources says otherwise: enough for a template render or a
// kubectl call, with a memory limit so that one runaway stage cannot take
// a node's memory, and no CPU limit, whose throttling only slows a short
// task down.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("512Mi"),
		},
	}
}

// Options configure a Runner.
type Options struct {
	// Client talks to the platform cluster; its scheme needs the core,
	// batch and RBAC types (client-go's scheme has them). Give it a client
	// that reads from the API server (client.New), not a manager's cached
	// client: the runner reads one run's Pods and ConfigMaps once, and a
	// cache would hold every Pod and ConfigMap of the cluster to serve
	// that. A client that can watch (client.NewWithWatch) lets the runner
	// see a Job finish at once instead of at the next poll.
	Client client.Client
	// Namespace runs promise workflows and requests of cluster-scoped
	// kinds; DefaultNamespace when empty.
	Namespace string
	// ReaderImage and WriterImage are the images of the reader and writer
	// containers; stage.Image(ReaderStageName) and
	// stage.Image(WriterStageName) when empty.
	ReaderImage string
	WriterImage string
	// Resources are every container's requests and limits;
	// DefaultResources() when nil.
	Resources *corev1.ResourceRequirements
	// TTL is the Job's ttlSecondsAfterFinished: the runner deletes the Job
	// itself, and this is the safety net if the controller dies first.
	// DefaultTTL when zero; at least a minute.
	TTL time.Duration
	// PollInterval is how often the runner checks the Job when its client
	// cannot watch, and how often it re-checks when it can (a watch may
	// end without telling). DefaultPollInterval when zero.
	PollInterval time.Duration
	// Ceiling bounds the permissions a pipeline may ask for. Nil allows
	// any namespaced permission and no cluster-wide one.
	Ceiling *Ceiling
	// RunAsUser is the uid (and gid) every container runs as;
	// DefaultRunAsUser when zero. The pod also sets runAsNonRoot.
	RunAsUser int64
	// WritableRootFilesystem lets the pipeline's containers write outside
	// the /kratix folders and /tmp. By default their root filesystem is
	// read-only, as the contract allows; images that write elsewhere (a
	// kubectl cache under $HOME) need this.
	WritableRootFilesystem bool
	// ChunkBytes is the most bytes one input Secret or output ConfigMap
	// holds; DefaultChunkBytes when zero.
	ChunkBytes int
	// MaxHandoffBytes bounds the unpacked input and output;
	// DefaultMaxHandoffBytes when zero.
	MaxHandoffBytes int64
}

// Runner runs pipelines as Kubernetes Jobs. It implements
// pipelines.PipelineRunner and is safe for concurrent use.
type Runner struct {
	client client.Client
	opts   Options
}

var _ pipelines.PipelineRunner = (*Runner)(nil)

// New returns a Runner with opts' defaults filled in.
func New(opts Options) (*Runner, error) {
	if opts.Client == nil {
		return nil, errors.New("the Job runner needs a Kubernetes client")
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.ReaderImage == "" {
		opts.ReaderImage = stage.Image(ReaderStageName)
	}
	if opts.WriterImage == "" {
		opts.WriterImage = stage.Image(WriterStageName)
	}
	if opts.Resources == nil {
		r := DefaultResources()
		opts.Resources = &r
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < minTTL {
		return nil, fmt.Errorf("the Job runner's TTL %s is shorter than %s: Kubernetes could delete a finished Job's output before the runner reads it", opts.TTL, minTTL)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.RunAsUser == 0 {
		opts.RunAsUser = DefaultRunAsUser
	}
	if opts.ChunkBytes == 0 {
		opts.ChunkBytes = DefaultChunkBytes
	}
	if opts.ChunkBytes < 0 || opts.ChunkBytes > 1000<<10 {
		return nil, fmt.Errorf("the Job runner's chunk size %d is not between 1 and %d bytes (Kubernetes refuses Secrets and ConfigMaps above 1 MiB)", opts.ChunkBytes, 1000<<10)
	}
	if opts.MaxHandoffBytes == 0 {
		opts.MaxHandoffBytes = DefaultMaxHandoffBytes
	}
	return &Runner{client: opts.Client, opts: opts}, nil
}

// NewForConfig is New with a client for cfg of the kind Options.Client
// asks for: reading from the API server, able to watch, with client-go's
// scheme. opts.Client is replaced.
func NewForConfig(cfg *rest.Config, opts Options) (*Runner, error) {
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the Job runner's client: %w", err)
	}
	opts.Client = c
	return New(opts)
}

// run is one pipeline run: what the runner created and must clean up.
type run struct {
	name      string
	namespace string
	key       []byte
}

// RunPipeline implements pipelines.PipelineRunner: it runs p as one Job in
// the request's namespace (the runner's namespace for promise workflows),
// waits for it under the pipeline's timeout, and unpacks the Job's output
// into ws. Whatever happens, it deletes what it created before returning.
//
// spec.timeout bounds the whole Job here (scheduling, image pulls and every
// container, also as the Job's activeDeadlineSeconds), where the runners
// that start each container themselves apply it to each container: a Job
// cannot bound its init containers one by one.
func (r *Runner) RunPipeline(ctx context.Context, p v1alpha1.Pipeline, ws contract.Workspace, env contract.Env) error {
	timeout := pipelines.DefaultTimeout
	if p.Spec.Timeout != nil && p.Spec.Timeout.Duration > 0 {
		timeout = p.Spec.Timeout.Duration
	}
	ns := env.ObjectNamespace
	if env.Type == contract.TypePromise || ns == "" {
		ns = r.opts.Namespace
	}
	if err := checkPipeline(p); err != nil {
		return err
	}
	gs, err := grants(p, ns, r.opts.Ceiling)
	if err != nil {
		return err
	}
	name, err := jobName(env.PromiseName, env.ObjectNamespace, env.ObjectName, p.Metadata.Name)
	if err != nil {
		return err
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("job", name, "namespace", ns, "pipeline", p.Metadata.Name)
	ctx = logr.NewContext(ctx, log)
	sa := serviceAccountName(env.PromiseName)
	if err := r.ensureIdentity(ctx, identity{
		Namespace: ns, ServiceAccount: sa, Promise: env.PromiseName, Pipeline: p.Metadata.Name, Grants: gs,
	}); err != nil {
		return err
	}

	rn := &run{name: name, namespace: ns, key: make([]byte, 32)}
	if _, err := rand.Read(rn.key); err != nil {
		return fmt.Errorf("creating the run's key: %w", err)
	}
	defer r.cleanup(ctx, rn)

	labels := map[string]string{
		LabelManagedBy: ManagedBy, LabelRun: name,
		LabelPromise: labelValue(env.PromiseName), LabelPipeline: labelValue(p.Metadata.Name),
	}
	annotations := map[string]string{annPromise: env.PromiseName, annPipeline: p.Metadata.Name}
	if env.ObjectName != "" && env.Type == contract.TypeResource {
		labels[LabelRequest] = labelValue(env.ObjectName)
		annotations[annRequest] = env.ObjectNamespace + "/" + env.ObjectName
	}
	secrets, inputDigest, err := r.createInput(ctx, rn, ws, labels)
	if err != nil {
		return err
	}
	job := jobSpec(jobParams{
		Name: name, Namespace: ns, ServiceAccount: sa, Pipeline: p, Env: env, Timeout: timeout,
		InputSecrets: secrets, InputDigest: inputDigest, Labels: labels, Annotations: annotations, Options: &r.opts,
	})
	started := time.Now()
	if err := r.client.Create(ctx, job); err != nil {
		return fmt.Errorf("creating Job %s/%s: %w", ns, name, err)
	}
	log.V(1).Info("created the pipeline's Job", "timeout", timeout)
	if err := r.ownInput(ctx, job, secrets); err != nil {
		return err
	}

	done, err := r.wait(ctx, job, timeout)
	if err != nil {
		return err
	}
	if err := r.readOutput(ctx, rn, ws); err != nil {
		return err
	}
	log.V(1).Info("pipeline's Job succeeded", "duration", time.Since(started).Round(time.Millisecond), "completed", done.Status.CompletionTime)
	return nil
}

// checkPipeline refuses what would make an invalid or ambiguous pod.
func checkPipeline(p v1alpha1.Pipeline) error {
	if len(p.Spec.Containers) == 0 {
		return errors.New("the pipeline has no containers")
	}
	seen := map[string]bool{}
	for _, c := range p.Spec.Containers {
		if c.Name == ReaderContainer || c.Name == WriterContainer {
			return fmt.Errorf("container name %q is reserved for the Job runner's own container", c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("container name %q is used twice", c.Name)
		}
		seen[c.Name] = true
		switch corev1.PullPolicy(c.ImagePullPolicy) {
		case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
		default:
			return fmt.Errorf("container %q: imagePullPolicy %q is not Always, IfNotPresent or Never", c.Name, c.ImagePullPolicy)
		}
	}
	return nil
}

// createInput packs the workspace's input/ and previous/ folders into
// Secrets, created before the Job so that its pod never waits for them.
// It returns their names in order and the digest of the whole.
func (r *Runner) createInput(ctx context.Context, rn *run, ws contract.Workspace, labels map[string]string) ([]string, string, error) {
	var buf bytes.Buffer
	if err := pack(&buf, tree{contract.InputDir, ws.Input()}, tree{contract.PreviousDir, ws.Previous()}); err != nil {
		return nil, "", fmt.Errorf("packing the pipeline's input: %w", err)
	}
	chunks := split(buf.Bytes(), r.opts.ChunkBytes)
	names := make([]string, 0, len(chunks))
	for i, chunk := range chunks {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-in-%d", rn.name, i), Namespace: rn.namespace, Labels: chunkLabels(labels, i),
				Annotations: map[string]string{AnnotationChunks: strconv.Itoa(len(chunks))},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{inputChunkKey(i): chunk},
		}
		if i == 0 {
			s.Data[keyRunKey] = rn.key
		}
		if err := r.client.Create(ctx, s); err != nil {
			return nil, "", fmt.Errorf("creating input Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		names = append(names, s.Name)
	}
	return names, digest(buf.Bytes()), nil
}

// ownInput makes the Job own its input Secrets, so that Kubernetes deletes
// them with it if the runner cannot.
func (r *Runner) ownInput(ctx context.Context, job *batchv1.Job, secrets []string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []metav1.OwnerReference{ownerRef(job.Name, job.UID)},
	}})
	if err != nil {
		return fmt.Errorf("making Job %s own its input: %w", job.Name, err)
	}
	for _, name := range secrets {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: job.Namespace}}
		if err := r.client.Patch(ctx, s, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("making Job %s own input Secret %s: %w", job.Name, name, err)
		}
	}
	return nil
}

// ownerRef is a non-blocking owner reference to a Job: blockOwnerDeletion
// would need permission on the Job's finalizers, which the writer lacks.
func ownerRef(name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: batchv1.SchemeGroupVersion.String(), Kind: "Job", Name: name, UID: uid}
}

func chunkLabels(labels map[string]string, i int) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out[LabelChunk] = strconv.Itoa(i)
	return out
}

// cleanup deletes the run's Job (its pods go with it), input Secrets and
// output ConfigMaps. It runs even when ctx is cancelled (the controller
// shutting down, a timeout), with a bound of its own; what it cannot
// delete, the Job's TTL and owner references catch later.
func (r *Runner) cleanup(ctx context.Context, rn *run) {
	log := logr.FromContextOrDiscard(ctx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: rn.name, Namespace: rn.namespace}}
	errs := []error{client.IgnoreNotFound(r.client.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)))}
	sel := []client.DeleteAllOfOption{client.InNamespace(rn.namespace), client.MatchingLabels{LabelRun: rn.name}}
	errs = append(errs,
		r.client.DeleteAllOf(ctx, &corev1.Secret{}, sel...),
		r.client.DeleteAllOf(ctx, &corev1.ConfigMap{}, sel...),
	)
	if err := errors.Join(errs...); err != nil {
		log.Error(err, "cleaning up the pipeline's Job; its TTL will remove it later")
	}
}
