package job

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
)

// Names of the containers the runner adds around a pipeline's own. A
// pipeline may not use them.
const (
	ReaderContainer = "promised-job-reader"
	WriterContainer = "promised-job-writer"
)

// Paths inside the Job's pod.
const (
	// HandoffPath is where the reader and writer see the run's input
	// Secrets.
	HandoffPath = "/promised/handoff"
	// ServiceAccountPath is where Kubernetes clients look for the pod's
	// token, CA bundle and namespace (rest.InClusterConfig).
	ServiceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// Environment variables of the reader and writer.
const (
	// EnvHandoff is the folder holding the input chunks and the run's key.
	EnvHandoff = "PROMISED_JOB_HANDOFF"
	// EnvInputChunks is the number of input chunks.
	EnvInputChunks = "PROMISED_JOB_INPUT_CHUNKS"
	// EnvInputDigest is the SHA-256 of the joined input chunks.
	EnvInputDigest = "PROMISED_JOB_INPUT_SHA256"
	// EnvRun is the run's id, which the writer puts on its ConfigMaps.
	EnvRun = "PROMISED_JOB_RUN"
	// EnvJobName and EnvJobUID name the Job the writer's ConfigMaps are
	// owned by.
	EnvJobName = "PROMISED_JOB_NAME"
	EnvJobUID  = "PROMISED_JOB_UID"
	// EnvChunkBytes is the most bytes the writer puts in one ConfigMap.
	EnvChunkBytes = "PROMISED_JOB_CHUNK_BYTES"
	// EnvMaxBytes bounds what the reader unpacks and the writer packs.
	EnvMaxBytes = "PROMISED_JOB_MAX_BYTES"
)

// Keys of the input Secrets.
const (
	// keyRunKey holds the run's HMAC key (in the first Secret only).
	keyRunKey = "run-key"
	// inputChunkPrefix prefixes the key of input chunk i:
	// "input.tar.gz.000", "input.tar.gz.001", …
	inputChunkPrefix = "input.tar.gz."
)

func inputChunkKey(i int) string { return fmt.Sprintf("%s%03d", inputChunkPrefix, i) }

// Volume names of the Job's pod.
const (
	volInput    = "kratix-input"
	volOutput   = "kratix-output"
	volMetadata = "kratix-metadata"
	volPrevious = "kratix-previous"
	volTmp      = "tmp"
	volHandoff  = "promised-handoff"
	volToken    = "promised-token"
)

// tokenExpirationSeconds is the lifetime of the pod's projected token:
// the value Kubernetes itself uses for its automounted tokens.
const tokenExpirationSeconds = 3607

// jobParams is everything jobSpec needs; building the Job is a pure
// function of it, so it is tested without a cluster.
type jobParams struct {
	Name           string
	Namespace      string
	ServiceAccount string
	Pipeline       v1alpha1.Pipeline
	Env            contract.Env
	Timeout        time.Duration
	InputSecrets   []string
	InputDigest    string
	Labels         map[string]string
	Annotations    map[string]string
	Options        *Options
}

// jobSpec builds one run's Job: the reader, then the pipeline's containers
// in order as init containers, sharing emptyDir folders at /kratix, then
// the writer as the only container.
func jobSpec(p jobParams) *batchv1.Job {
	o := p.Options
	backoff := int32(0)
	deadline := int64(math.Ceil(p.Timeout.Seconds()))
	ttl := int32(o.TTL.Seconds())
	podLabels := map[string]string{}
	maps.Copy(podLabels, p.Pipeline.Metadata.Labels)
	maps.Copy(podLabels, p.Labels)
	podAnnotations := map[string]string{}
	maps.Copy(podAnnotations, p.Pipeline.Metadata.Annotations)
	maps.Copy(podAnnotations, p.Annotations)
	// The contract's folders, shared by every container of the pod.
	folders := []struct{ vol, dir string }{
		{volInput, contract.InputDir}, {volOutput, contract.OutputDir},
		{volMetadata, contract.MetadataDir}, {volPrevious, contract.PreviousDir},
	}
	mount := func(vol, dir string, readOnly bool) corev1.VolumeMount {
		return corev1.VolumeMount{Name: vol, MountPath: contract.ContainerRoot + "/" + dir, ReadOnly: readOnly}
	}
	volumes := make([]corev1.Volume, 0, len(folders)+3)
	for _, f := range folders {
		volumes = append(volumes, corev1.Volume{Name: f.vol, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	volumes = append(volumes,
		corev1.Volume{Name: volTmp, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		handoffVolume(p.InputSecrets),
		tokenVolume(),
	)
	handoffMount := corev1.VolumeMount{Name: volHandoff, MountPath: HandoffPath, ReadOnly: true}
	tokenMount := corev1.VolumeMount{Name: volToken, MountPath: ServiceAccountPath, ReadOnly: true}
	contractEnv := envVars(p.Env.Map())

	reader := helperContainer(o, ReaderContainer, o.ReaderImage,
		slices.Concat(contractEnv, []corev1.EnvVar{
			{Name: EnvHandoff, Value: HandoffPath},
			{Name: EnvInputChunks, Value: strconv.Itoa(len(p.InputSecrets))},
			{Name: EnvInputDigest, Value: p.InputDigest},
			{Name: EnvMaxBytes, Value: strconv.FormatInt(o.MaxHandoffBytes, 10)},
		}),
		[]corev1.VolumeMount{handoffMount, mount(volInput, contract.InputDir, false), mount(volPrevious, contract.PreviousDir, false)})

	// A pipeline that asks for permissions gets the token to use them;
	// one that does not has no business with the API server.
	withToken := len(p.Pipeline.Spec.RBAC.Permissions) > 0
	inits := []corev1.Container{reader}
	for _, c := range p.Pipeline.Spec.Containers {
		mounts := make([]corev1.VolumeMount, 0, len(folders)+2)
		for _, f := range folders {
			mounts = append(mounts, mount(f.vol, f.dir, false))
		}
		mounts = append(mounts, corev1.VolumeMount{Name: volTmp, MountPath: "/tmp"})
		if withToken {
			mounts = append(mounts, tokenMount)
		}
		inits = append(inits, userContainer(o, c, p.Env, mounts))
	}

	writer := helperContainer(o, WriterContainer, o.WriterImage,
		slices.Concat(contractEnv, []corev1.EnvVar{
			{Name: EnvHandoff, Value: HandoffPath},
			{Name: EnvRun, Value: p.Name},
			{Name: EnvJobName, Value: p.Name},
			// The Job's UID is only known once it exists; the API server
			// copies it into the pod template's labels, and the downward
			// API hands it to the writer for its owner references.
			{Name: EnvJobUID, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
				APIVersion: "v1", FieldPath: "metadata.labels['" + batchv1.ControllerUidLabel + "']",
			}}},
			{Name: EnvChunkBytes, Value: strconv.Itoa(o.ChunkBytes)},
			{Name: EnvMaxBytes, Value: strconv.FormatInt(o.MaxHandoffBytes, 10)},
		}),
		[]corev1.VolumeMount{handoffMount, tokenMount, mount(volOutput, contract.OutputDir, true), mount(volMetadata, contract.MetadataDir, true)})

	nonRoot := true
	automount := false
	serviceLinks := false
	runAs := o.RunAsUser
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations},
		Spec: batchv1.JobSpec{
			// Retries happen at the reconcile level, with the request's
			// backoff; a Job retrying on its own would hide failures.
			BackoffLimit:            &backoff,
			ActiveDeadlineSeconds:   &deadline,
			TTLSecondsAfterFinished: &ttl,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           p.ServiceAccount,
					AutomountServiceAccountToken: &automount,
					// The contract's environment is all a stage should see;
					// service links would add a variable per Service.
					EnableServiceLinks: &serviceLinks,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   &nonRoot,
						RunAsUser:      &runAs,
						RunAsGroup:     &runAs,
						FSGroup:        &runAs,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes:        volumes,
					InitContainers: inits,
					Containers:     []corev1.Container{writer},
				},
			},
		},
	}
}

// handoffVolume projects every input Secret into one folder, so an input
// larger than one Secret still arrives as files the reader joins in order.
func handoffVolume(secrets []string) corev1.Volume {
	mode := int32(0o444)
	sources := make([]corev1.VolumeProjection, 0, len(secrets))
	for _, s := range secrets {
		sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: s},
		}})
	}
	return corev1.Volume{Name: volHandoff, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: sources, DefaultMode: &mode,
	}}}
}

// tokenVolume is the volume Kubernetes mounts for a pod's service account
// when automounting is on: a bound, expiring token, the cluster's CA and
// the namespace. The runner turns automounting off and mounts this only
// into the containers that need it.
func tokenVolume() corev1.Volume {
	exp := int64(tokenExpirationSeconds)
	mode := int32(0o444)
	return corev1.Volume{Name: volToken, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: &mode,
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
			}}}},
		},
	}}}
}

// userContainer is one of the pipeline's containers: its image, command,
// args and env, with the contract's variables winning over its own (a
// stage must be able to trust them), as in every other runner.
func userContainer(o *Options, c v1alpha1.Container, env contract.Env, mounts []corev1.VolumeMount) corev1.Container {
	vars := map[string]string{}
	for _, e := range c.Env {
		vars[e.Name] = e.Value
	}
	maps.Copy(vars, env.Map())
	return corev1.Container{
		Name:            c.Name,
		Image:           c.Image,
		Command:         c.Command,
		Args:            c.Args,
		Env:             envVars(vars),
		ImagePullPolicy: corev1.PullPolicy(c.ImagePullPolicy),
		Resources:       *o.Resources.DeepCopy(),
		VolumeMounts:    mounts,
		SecurityContext: containerSecurity(!o.WritableRootFilesystem),
		// A stage that fails without writing a termination message still
		// says why: the end of its log becomes the message the runner
		// reports.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// helperContainer is the reader or the writer: promised's own code, which
// never writes outside its mounts.
func helperContainer(o *Options, name, image string, env []corev1.EnvVar, mounts []corev1.VolumeMount) corev1.Container {
	return corev1.Container{
		Name:                     name,
		Image:                    image,
		Env:                      env,
		Resources:                *o.Resources.DeepCopy(),
		VolumeMounts:             mounts,
		SecurityContext:          containerSecurity(true),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func containerSecurity(readOnlyRoot bool) *corev1.SecurityContext {
	no := false
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: &no,
		Privileged:               &no,
		ReadOnlyRootFilesystem:   &readOnlyRoot,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// envVars turns a map into sorted EnvVars, so the same run gives the same
// pod spec.
func envVars(m map[string]string) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(m))
	for k, v := range m {
		out = append(out, corev1.EnvVar{Name: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
