// Package kratix converts Kratix Promises into promised's: the code behind
// `promised import kratix`.
//
// promised keeps Kratix's pipeline container contract, so a Kratix
// Promise's API, dependencies, destination selectors, required promises and
// workflows (with their images, commands, arguments, environment and RBAC
// permissions) carry over unchanged; only the API group moves to
// platform.promised.dev. What promised's Promise has no field for (pipeline
// volumes, envFrom, a custom ServiceAccount, ...) cannot be carried over:
// it is dropped and reported, field by field, with what to do instead, so
// that nothing is lost silently.
package kratix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/stage"
)

// Group and Version of Kratix's Promise and Pipeline.
const (
	Group      = "platform.kratix.io"
	APIVersion = Group + "/v1alpha1"
)

// Kratix's promise-version label and promised's, which requiredPromises
// versions are checked against.
const (
	kratixVersionLabel = "kratix.io/promise-version"
	versionLabel       = "promised.dev/promise-version"
)

// Finding is one thing the conversion reports, at a field path of the
// Kratix Promise such as spec.workflows.resource.configure[0].spec.volumes.
type Finding struct {
	Path    string
	Message string
}

// String is "path: message".
func (f Finding) String() string { return f.Path + ": " + f.Message }

// Result is a converted Promise.
type Result struct {
	Promise *v1alpha1.Promise
	// YAML is the Promise as promised reads it, headed by comments listing
	// the warnings, so the file itself records what did not carry over.
	YAML []byte
	// Warnings are fields that were dropped: the converted Promise does
	// not do what they did.
	Warnings []Finding
	// Notes are changes that keep the meaning (a renamed label, the new
	// API group) and facts worth knowing (images that run as Jobs).
	Notes []Finding
}

// Convert converts one Kratix Promise (YAML or JSON).
func Convert(data []byte) (*Result, error) {
	if docs := splitDocuments(data); len(docs) != 1 {
		return nil, fmt.Errorf("want exactly one YAML document holding a Kratix Promise, found %d", len(docs))
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("not a YAML object: %w", err)
	}
	if err := checkHead(obj); err != nil {
		return nil, err
	}
	c := &converter{}
	c.metadata(obj)
	c.pipelines(obj)
	if _, ok := obj["status"]; ok {
		delete(obj, "status")
		c.note("status", "dropped: the controller writes it")
	}
	obj["apiVersion"] = v1alpha1.GroupVersion.String()
	c.note("apiVersion", fmt.Sprintf("%s → %s", APIVersion, v1alpha1.GroupVersion.String()))

	p, err := c.decode(obj)
	if err != nil {
		return nil, err
	}
	c.images(p)
	out, err := c.render(p)
	if err != nil {
		return nil, err
	}
	// The output must load as promised loads promises, and its API must
	// be a CRD the controller would install.
	loaded, err := local.ParsePromise("the converted promise", out)
	if err != nil {
		return nil, fmt.Errorf("the converted promise does not load: %w", err)
	}
	if loaded.Spec.API != nil {
		if _, err := apischema.CRD(loaded); err != nil {
			return nil, fmt.Errorf("spec.api: %w", err)
		}
	}
	sortFindings(c.warnings)
	sortFindings(c.notes)
	return &Result{Promise: loaded, YAML: withHeader(out, c.warnings), Warnings: c.warnings, Notes: c.notes}, nil
}

// checkHead refuses anything but a current-format Kratix Promise.
func checkHead(obj map[string]any) error {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	if kind != "Promise" {
		return fmt.Errorf("kind %q: want a Kratix Promise (kind Promise, apiVersion %s)", kind, APIVersion)
	}
	if strings.HasPrefix(apiVersion, v1alpha1.Group+"/") {
		return fmt.Errorf("apiVersion %s: this is already a promised Promise; nothing to import", apiVersion)
	}
	if apiVersion != APIVersion {
		return fmt.Errorf("apiVersion %q: want %s", apiVersion, APIVersion)
	}
	spec, _ := obj["spec"].(map[string]any)
	for _, old := range []string{"xaasCrd", "xaasRequestPipeline", "workerClusterResources", "clusterSelector"} {
		if _, ok := spec[old]; ok {
			return fmt.Errorf("spec.%s: this Promise is in Kratix's format from before workflows (xaasCrd, xaasRequestPipeline, workerClusterResources); move it to spec.api, spec.workflows and spec.dependencies first", old)
		}
	}
	return nil
}

type converter struct {
	warnings, notes []Finding
}

func (c *converter) warn(path, msg string) { c.warnings = append(c.warnings, Finding{path, msg}) }
func (c *converter) note(path, msg string) { c.notes = append(c.notes, Finding{path, msg}) }

// metadata keeps what a Promise's author sets (name, labels, annotations)
// and drops what a cluster sets, so a Promise exported with
// `kubectl get promise -o yaml` converts as well as its source file.
func (c *converter) metadata(obj map[string]any) {
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		return
	}
	for _, k := range sortedKeys(meta) {
		switch k {
		case "name", "labels", "annotations":
		case "namespace":
			delete(meta, k)
			c.warn("metadata.namespace", "dropped: a Promise is cluster-scoped")
		default:
			delete(meta, k)
			c.note("metadata."+k, "dropped: set by the cluster, not by the Promise's author")
		}
	}
	if ann, ok := meta["annotations"].(map[string]any); ok {
		const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"
		if _, ok := ann[lastApplied]; ok {
			delete(ann, lastApplied)
			c.note("metadata.annotations", "dropped "+lastApplied+": it describes the Kratix object")
		}
		if len(ann) == 0 {
			delete(meta, "annotations")
		}
	}
	if labels, ok := meta["labels"].(map[string]any); ok {
		if v, ok := labels[kratixVersionLabel]; ok {
			delete(labels, kratixVersionLabel)
			if _, set := labels[versionLabel]; !set {
				labels[versionLabel] = v
			}
			c.note("metadata.labels", fmt.Sprintf("%s → %s (what requiredPromises versions are checked against)", kratixVersionLabel, versionLabel))
		}
	}
}

// pipelines moves each pipeline to promised's API group. A pipeline of
// another kind cannot run in promised (nor in Kratix, which refuses it).
func (c *converter) pipelines(obj map[string]any) {
	spec, _ := obj["spec"].(map[string]any)
	workflows, _ := spec["workflows"].(map[string]any)
	moved := 0
	for _, typ := range []string{"promise", "resource"} {
		actions, _ := workflows[typ].(map[string]any)
		for _, action := range []string{"configure", "delete"} {
			list, _ := actions[action].([]any)
			for i, item := range list {
				pl, _ := item.(map[string]any)
				if pl == nil {
					continue
				}
				c.env(fmt.Sprintf("spec.workflows.%s.%s[%d]", typ, action, i), pl)
				if av, _ := pl["apiVersion"].(string); av == APIVersion {
					pl["apiVersion"] = v1alpha1.GroupVersion.String()
					moved++
				} else if av != "" {
					c.warn(fmt.Sprintf("spec.workflows.%s.%s[%d].apiVersion", typ, action, i), fmt.Sprintf("%q is not a Kratix Pipeline; kept as is, and the controller will refuse it", av))
				}
			}
		}
	}
	if moved > 0 {
		c.note("spec.workflows", fmt.Sprintf("%d pipeline(s): apiVersion %s → %s", moved, APIVersion, v1alpha1.GroupVersion.String()))
	}
}

// env leaves out variables whose value comes from a Secret or ConfigMap
// (valueFrom): promised's EnvVar has only a value, and keeping the name
// alone would hand the stage an empty string where it expects a password.
func (c *converter) env(path string, pipeline map[string]any) {
	spec, _ := pipeline["spec"].(map[string]any)
	containers, _ := spec["containers"].([]any)
	for i, ct := range containers {
		container, _ := ct.(map[string]any)
		vars, _ := container["env"].([]any)
		kept := vars[:0:0]
		for j, v := range vars {
			ev, _ := v.(map[string]any)
			if _, from := ev["valueFrom"]; from {
				c.warn(fmt.Sprintf("%s.spec.containers[%d].env[%d]", path, i, j), fmt.Sprintf("dropped variable %v: values from Secrets or ConfigMaps (valueFrom) are not supported; set value, or read a platform configuration Secret from a Go stage (stage.Context.Secrets)", ev["name"]))
				continue
			}
			kept = append(kept, v)
		}
		if len(kept) != len(vars) {
			container["env"] = kept
		}
	}
}

// decode reads obj into promised's Promise. Every field the type has no
// place for is reported; encoding/json would drop it without a word.
func (c *converter) decode(obj map[string]any) (*v1alpha1.Promise, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("re-encoding the promise: %w", err)
	}
	p := &v1alpha1.Promise{}
	strict, err := kjson.UnmarshalStrict(raw, p)
	if err != nil {
		return nil, fmt.Errorf("reading the promise: %w", err)
	}
	for _, e := range strict {
		path, ok := unknownField(e)
		if !ok {
			c.warn("(promise)", e.Error())
			continue
		}
		c.warn(path, "dropped: "+hintFor(path))
	}
	if p.Name == "" {
		return nil, errors.New("metadata.name is empty")
	}
	return p, nil
}

var unknownFieldPattern = regexp.MustCompile(`^unknown field "(.*)"$`)

func unknownField(err error) (string, bool) {
	m := unknownFieldPattern.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	return m[1], true
}

// hints say what to do instead of a Kratix field promised has no place
// for, keyed by the field's path with list indexes as [*].
var hints = map[string]string{
	"spec.workflows.*.*[*].spec.volumes":                             "promised's pipelines have no volumes; a stage reads its input from /kratix/input and platform configuration from Secrets (Go stages: stage.Context.Secrets)",
	"spec.workflows.*.*[*].spec.containers[*].volumeMounts":          "promised's pipelines have no volumes; only the /kratix folders are mounted",
	"spec.workflows.*.*[*].spec.imagePullSecrets":                    "promised's Pipeline has no imagePullSecrets; give the nodes (or the namespace's default ServiceAccount) the registry's credentials",
	"spec.workflows.*.*[*].spec.rbac.serviceAccount":                 "promised runs a promise's pipelines as its own ServiceAccount (promised-<promise>-pipeline); the permissions are kept and granted to it",
	"spec.workflows.*.*[*].spec.containers[*].envFrom":               "envFrom is not supported; list each variable under env",
	"spec.workflows.*.*[*].spec.containers[*].env[*].valueFrom":      "env values from Secrets or ConfigMaps are not supported; set value, or read a platform configuration Secret from a Go stage",
	"spec.workflows.*.*[*].spec.containers[*].securityContext":       "the Job runner sets every container's securityContext (non-root, no privilege escalation, read-only root filesystem)",
	"spec.workflows.*.*[*].spec.rbac.permissions[*].nonResourceURLs": "promised grants pipelines resource permissions only",
	"spec.requirements": "Kratix's older name for requiredPromises; move the entries there",
}

var indexPattern = regexp.MustCompile(`\[\d+\]`)

// hintFor returns what to do about the dropped field at path.
func hintFor(path string) string {
	general := indexPattern.ReplaceAllString(path, "[*]")
	// spec.workflows.<type>.<action>: the two segments after workflows.
	if rest, ok := strings.CutPrefix(general, "spec.workflows."); ok {
		parts := strings.SplitN(rest, ".", 3)
		if len(parts) == 3 {
			action := parts[1]
			if i := strings.Index(action, "["); i >= 0 {
				action = "*" + action[i:]
			}
			general = "spec.workflows.*." + action + "." + parts[2]
		}
	}
	if h, ok := hints[general]; ok {
		return h
	}
	return "promised's Promise has no such field"
}

// images notes the pipeline images that are not promised's built-in
// stages: the controller runs those as Kubernetes Jobs (the Job runner),
// and `promised render` and `promised test` with Docker.
func (c *converter) images(p *v1alpha1.Promise) {
	seen := map[string]bool{}
	var foreign []string
	for _, w := range []v1alpha1.WorkflowActions{p.Spec.Workflows.Promise, p.Spec.Workflows.Resource} {
		for _, pl := range append(append([]v1alpha1.Pipeline{}, w.Configure...), w.Delete...) {
			for _, ct := range pl.Spec.Containers {
				if _, builtin := stage.BuiltinName(ct.Image); !builtin && !seen[ct.Image] {
					seen[ct.Image] = true
					foreign = append(foreign, ct.Image)
				}
			}
		}
	}
	if len(foreign) > 0 {
		sort.Strings(foreign)
		c.note("spec.workflows", "images run as Jobs by the controller (and with Docker by `promised render`): "+strings.Join(foreign, ", "))
	}
}

// render prints p as YAML without the fields the decode filled with zero
// values (status, creationTimestamp).
func (c *converter) render(p *v1alpha1.Promise) ([]byte, error) {
	p.APIVersion = v1alpha1.GroupVersion.String()
	p.Kind = "Promise"
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encoding the converted promise: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("encoding the converted promise: %w", err)
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	// A pipeline without permissions would print "rbac: {}": the field is a
	// struct, which omitempty does not leave out.
	spec, _ := m["spec"].(map[string]any)
	workflows, _ := spec["workflows"].(map[string]any)
	for typ, actions := range workflows {
		byAction, _ := actions.(map[string]any)
		if len(byAction) == 0 {
			// Likewise "resource: {}" for a promise with promise workflows only.
			delete(workflows, typ)
			continue
		}
		for _, list := range byAction {
			pipelines, _ := list.([]any)
			for _, pl := range pipelines {
				plSpec, _ := pl.(map[string]any)["spec"].(map[string]any)
				if rbac, ok := plSpec["rbac"].(map[string]any); ok && len(rbac) == 0 {
					delete(plSpec, "rbac")
				}
			}
		}
	}
	if workflows != nil && len(workflows) == 0 {
		delete(spec, "workflows")
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding the converted promise: %w", err)
	}
	return out, nil
}

// withHeader prefixes the YAML with comments naming its origin and every
// warning.
func withHeader(body []byte, warnings []Finding) []byte {
	var b bytes.Buffer
	b.WriteString("# Converted from a Kratix Promise by `promised import kratix`.\n")
	if len(warnings) > 0 {
		b.WriteString("# Not carried over (promised has no place for these fields):\n")
		for _, w := range warnings {
			b.WriteString("#   " + w.String() + "\n")
		}
	}
	b.Write(body)
	return b.Bytes()
}

var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocuments returns the non-empty YAML documents of data.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range documentSeparator.Split(string(data), -1) {
		if len(bytes.TrimSpace(stripComments([]byte(d)))) > 0 {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sortFindings orders findings by path, keeping the order of findings at
// the same path.
func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
}
