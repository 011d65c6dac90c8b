package contract

import (
	"fmt"
	"path"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Selector is one entry of destination-selectors.yaml: the labels a
// destination must carry to receive the files under Directory (the whole
// output when Directory is empty).
type Selector struct {
	Directory   string            `json:"directory,omitempty"`
	MatchLabels map[string]string `json:"matchLabels"`
}

// ParseSelectors reads destination-selectors.yaml and checks every entry:
// Directory is a single top-level output folder, label keys and values are
// valid Kubernetes labels, and no directory appears twice.
func ParseSelectors(data []byte) ([]Selector, error) {
	var sels []Selector
	if err := yaml.UnmarshalStrict(data, &sels); err != nil {
		return nil, fmt.Errorf("%s: not a list of {directory, matchLabels}: %w", SelectorsFile, err)
	}
	seen := map[string]bool{}
	for i, s := range sels {
		if err := checkSelectorDirectory(s.Directory); err != nil {
			return nil, fmt.Errorf("%s: entry %d: directory %q: %w", SelectorsFile, i, s.Directory, err)
		}
		if seen[s.Directory] {
			return nil, fmt.Errorf("%s: entry %d: directory %q listed twice", SelectorsFile, i, s.Directory)
		}
		seen[s.Directory] = true
		if err := CheckLabels(s.MatchLabels); err != nil {
			return nil, fmt.Errorf("%s: entry %d: matchLabels: %w", SelectorsFile, i, err)
		}
	}
	return sels, nil
}

func checkSelectorDirectory(dir string) error {
	if dir == "" {
		return nil
	}
	if strings.ContainsAny(dir, "/\\") || dir == "." || dir == ".." || path.Clean(dir) != dir {
		return fmt.Errorf("must be one top-level folder of the output, without slashes or dots")
	}
	return nil
}

// CheckLabels reports the first label key or value Kubernetes would refuse.
func CheckLabels(labels map[string]string) error {
	for k, v := range labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %q value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	return nil
}

// WorkflowControl is workflow-control.yaml: a stage's request to retry the
// workflow later or to stop after this pipeline.
type WorkflowControl struct {
	// RetryAfter asks for the workflow to run again after this long.
	RetryAfter time.Duration `json:"-"`
	// Suspend stops the workflow after the current pipeline.
	Suspend bool `json:"suspend,omitempty"`
	// Message is shown in the request's status.
	Message string `json:"message,omitempty"`
}

// ParseWorkflowControl reads workflow-control.yaml.
func ParseWorkflowControl(data []byte) (WorkflowControl, error) {
	var raw struct {
		RetryAfter string `json:"retryAfter,omitempty"`
		Suspend    bool   `json:"suspend,omitempty"`
		Message    string `json:"message,omitempty"`
	}
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return WorkflowControl{}, fmt.Errorf("%s: %w", WorkflowControlFile, err)
	}
	wc := WorkflowControl{Suspend: raw.Suspend, Message: raw.Message}
	if raw.RetryAfter != "" {
		d, err := time.ParseDuration(raw.RetryAfter)
		if err != nil || d <= 0 {
			return WorkflowControl{}, fmt.Errorf("%s: retryAfter %q is not a positive duration such as 5m", WorkflowControlFile, raw.RetryAfter)
		}
		wc.RetryAfter = d
	}
	return wc, nil
}

// ParseStatus reads status.yaml: a map merged into the object's status.
func ParseStatus(data []byte) (map[string]any, error) {
	status := map[string]any{}
	if err := yaml.Unmarshal(data, &status); err != nil {
		return nil, fmt.Errorf("%s: not a YAML map: %w", StatusFile, err)
	}
	return status, nil
}
