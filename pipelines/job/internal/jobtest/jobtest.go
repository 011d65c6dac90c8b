// Package jobtest is the Job runner tests' pipeline stage. It exists both
// as a stage.Func, run in-process, and as an image built around stagebin,
// run by the Job runner, so the tests can check that both give the same
// output. JOBTEST_MODE picks what it does:
//
//	""       writes a ConfigMap made from the input object and the
//	         contract's environment, reads the previous output, an extra
//	         input and (as the second container) the first container's
//	         output, and sets status and a destination selector
//	fail     fails with JOBTEST_MESSAGE
//	sleep    sleeps for JOBTEST_SLEEP
//	symlink  puts a symlink to the pod's service-account token in output/
//	copy     copies input/JOBTEST_FILE to output/JOBTEST_FILE
//	api      reads the ConfigMap JOBTEST_GET (namespace/name) with the pod's
//	         service account and writes its data as output
package jobtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/stage"
)

// Name is the stage's name: its image is stage.Image(Name).
const Name = "jobtest"

// Stage is the stage.
func Stage(ctx context.Context, c *stage.Context) error {
	switch mode := c.Getenv("JOBTEST_MODE"); mode {
	case "":
		return render(c)
	case "fail":
		return errors.New(c.Getenv("JOBTEST_MESSAGE"))
	case "sleep":
		d, err := time.ParseDuration(c.Getenv("JOBTEST_SLEEP"))
		if err != nil {
			return err
		}
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case "symlink":
		if err := c.WriteFile("ok.yaml", []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n")); err != nil {
			return err
		}
		return os.Symlink("/var/run/secrets/kubernetes.io/serviceaccount/token", filepath.Join(c.Workspace.Output(), "token"))
	case "copy":
		data, err := c.Input(c.Getenv("JOBTEST_FILE"))
		if err != nil {
			return err
		}
		return c.WriteFile(c.Getenv("JOBTEST_FILE"), data)
	case "api":
		return api(ctx, c)
	default:
		return fmt.Errorf("unknown JOBTEST_MODE %q", mode)
	}
}

func render(c *stage.Context) error {
	obj, err := c.Object()
	if err != nil {
		return err
	}
	spec, err := c.Spec()
	if err != nil {
		return err
	}
	role := c.Getenv("JOBTEST_ROLE")
	data := map[string]any{"role": role}
	for k, v := range c.Env.Map() {
		data[k] = v
	}
	for k, v := range spec {
		data["spec."+k] = fmt.Sprint(v)
	}
	status, _, _ := unstructured.NestedString(obj.Object, "status", "seen")
	data["status.seen"] = status
	data["previous"] = orNone(c.Previous("first.yaml"))
	data["input.region"] = orNone(c.Input("facts/region.txt"))
	if role == "second" {
		if _, err := c.ReadOutput("nested/first.yaml"); err != nil {
			return fmt.Errorf("the first container's output is missing: %w", err)
		}
	}
	cm := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": obj.GetName() + "-" + role, "namespace": obj.GetNamespace()},
		"data":     data,
	}
	if err := c.WriteObjects("nested/"+role+".yaml", cm); err != nil {
		return err
	}
	if role == "first" {
		if err := c.WriteFile("first.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: marker\n")); err != nil {
			return err
		}
		if err := c.AddDestinationSelector(contract.Selector{Directory: "nested", MatchLabels: map[string]string{"tier": "jobtest"}}); err != nil {
			return err
		}
	}
	return c.SetStatus(map[string]any{
		"seen": c.Env.PipelineName + "/" + role,
		"conditions": []any{map[string]any{
			"type": "Rendered" + strings.ToUpper(role[:1]) + role[1:], "status": "True", "reason": "JobTest",
		}},
	})
}

func api(ctx context.Context, c *stage.Context) error {
	ns, name, ok := strings.Cut(c.Getenv("JOBTEST_GET"), "/")
	if !ok {
		return fmt.Errorf("JOBTEST_GET is %q: want namespace/name", c.Getenv("JOBTEST_GET"))
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return c.WriteObjects("fetched.yaml", map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "fetched"}, "data": cm.Data,
	})
}

func orNone(data []byte, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "none"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return string(data)
}
