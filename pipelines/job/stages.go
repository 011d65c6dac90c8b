package job

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
)

// ReaderStage is the first init container of a pipeline's Job
// (`promised-stage job-reader`): it joins the input chunks the runner put
// in Secrets, checks them against the digest in its environment and
// unpacks them into /kratix/input and /kratix/previous.
func ReaderStage(_ context.Context, c *stage.Context) error {
	if err := inJobPod(c, ReaderStageName); err != nil {
		return err
	}
	dir := c.Getenv(EnvHandoff)
	n, err := strconv.Atoi(c.Getenv(EnvInputChunks))
	if err != nil || n <= 0 {
		return fmt.Errorf("%s is %q: want the number of input chunks", EnvInputChunks, c.Getenv(EnvInputChunks))
	}
	maxBytes, err := envBytes(c, EnvMaxBytes, DefaultMaxHandoffBytes)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for i := range n {
		data, err := os.ReadFile(filepath.Join(dir, inputChunkKey(i)))
		if err != nil {
			return fmt.Errorf("reading input chunk %d of %d: %w", i, n, err)
		}
		buf.Write(data)
	}
	if got, want := digest(buf.Bytes()), c.Getenv(EnvInputDigest); got != want {
		return fmt.Errorf("the input's SHA-256 is %s, the runner sent %s", got, want)
	}
	return unpack(&buf, map[string]string{
		contract.InputDir: c.Workspace.Input(), contract.PreviousDir: c.Workspace.Previous(),
	}, unpackLimits{MaxBytes: maxBytes, MaxFiles: maxHandoffFiles})
}

// WriterStage is the last container of a pipeline's Job
// (`promised-stage job-writer`): it packs /kratix/output and
// /kratix/metadata and hands them back to the runner in ConfigMaps it
// creates with the pod's ServiceAccount, owned by the Job and marked with
// the run's id, each chunk index and a MAC under the run's key.
func WriterStage(ctx context.Context, c *stage.Context) error {
	if err := inJobPod(c, WriterStageName); err != nil {
		return err
	}
	runID, jobName, jobUID := c.Getenv(EnvRun), c.Getenv(EnvJobName), c.Getenv(EnvJobUID)
	for name, v := range map[string]string{EnvRun: runID, EnvJobName: jobName, EnvJobUID: jobUID} {
		if v == "" {
			return fmt.Errorf("%s is empty: the writer runs only in a Job made by promised's Job runner", name)
		}
	}
	chunkBytes, err := envBytes(c, EnvChunkBytes, DefaultChunkBytes)
	if err != nil {
		return err
	}
	maxBytes, err := envBytes(c, EnvMaxBytes, DefaultMaxHandoffBytes)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(c.Getenv(EnvHandoff), keyRunKey))
	if err != nil {
		return fmt.Errorf("reading the run's key: %w", err)
	}
	var buf bytes.Buffer
	if err := pack(&buf, tree{contract.OutputDir, c.Workspace.Output()}, tree{contract.MetadataDir, c.Workspace.Metadata()}); err != nil {
		return err
	}
	if int64(buf.Len()) > maxBytes {
		return fmt.Errorf("the pipeline's output is %d bytes compressed, more than the %d the runner accepts", buf.Len(), maxBytes)
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("connecting to the platform cluster: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("connecting to the platform cluster: %w", err)
	}
	ns, err := os.ReadFile(filepath.Join(ServiceAccountPath, "namespace"))
	if err != nil {
		return fmt.Errorf("reading the pod's namespace: %w", err)
	}
	sum := mac(key, buf.Bytes())
	chunks := split(buf.Bytes(), int(chunkBytes))
	labels := map[string]string{
		LabelManagedBy: ManagedBy, LabelRun: runID,
		LabelPromise: labelValue(c.Env.PromiseName), LabelPipeline: labelValue(c.Env.PipelineName),
	}
	for i, chunk := range chunks {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-out-%d", jobName, i), Namespace: strings.TrimSpace(string(ns)),
				Labels:          chunkLabels(labels, i),
				Annotations:     map[string]string{AnnotationChunks: strconv.Itoa(len(chunks)), AnnotationMAC: sum},
				OwnerReferences: []metav1.OwnerReference{ownerRef(jobName, types.UID(jobUID))},
			},
			BinaryData: map[string][]byte{outputChunkKey: chunk},
		}
		if err := createRetrying(ctx, cs, cm); err != nil {
			return fmt.Errorf("handing back output chunk %d of %d: %w", i, len(chunks), err)
		}
	}
	return nil
}

// createRetrying creates cm, retrying what a busy or restarting API server
// answers. AlreadyExists after a retry means an earlier attempt got
// through.
func createRetrying(ctx context.Context, cs kubernetes.Interface, cm *corev1.ConfigMap) error {
	attempts := 0
	return retry.OnError(retry.DefaultBackoff, transient, func() error {
		attempts++
		_, err := cs.CoreV1().ConfigMaps(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{})
		if attempts > 1 && apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func transient(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) ||
		utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err)
}

// inJobPod refuses to run the reader or writer anywhere but in a Job's
// pod. Both are registered as built-in stages so that promised-stage can
// run them, which would also let a pipeline run them in-process in the
// controller, where the writer would create ConfigMaps with the
// controller's own credentials.
func inJobPod(c *stage.Context, name string) error {
	if c.Workspace.Root != contract.ContainerRoot {
		return fmt.Errorf("the %s stage runs only in a pipeline Job's pod, with the contract's folders at %s (here they are at %s)", name, contract.ContainerRoot, c.Workspace.Root)
	}
	return nil
}

func envBytes(c *stage.Context, name string, def int64) (int64, error) {
	v := c.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s is %q: want a positive number of bytes", name, v)
	}
	return n, nil
}
