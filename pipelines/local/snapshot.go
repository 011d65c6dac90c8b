package local

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines"
	"promised.dev/promised/pipelines/validate"
)

// Files of a snapshot besides the pipelines' own folders. Pipeline names
// are DNS labels and cannot contain a dot, so these never collide.
const (
	SnapshotStatus       = "status.yaml"
	SnapshotDestinations = "destinations.yaml"
)

// Placement is where one folder of a pipeline's output may go: the
// promise's selectors plus the pipeline's own for that folder.
type Placement struct {
	Pipeline    string              `json:"pipeline"`
	Directory   string              `json:"directory,omitempty"`
	MatchLabels []map[string]string `json:"matchLabels,omitempty"`
}

// Snapshot lays a result out as files: each pipeline's output under its
// name, the merged status and the placement of every folder. It is what
// `render --output` writes and what `promised test` compares.
func Snapshot(p *v1alpha1.Promise, res *pipelines.Result) (map[string][]byte, error) {
	files := res.Files()
	var placements []Placement
	for _, out := range res.Pipelines {
		base := []map[string]string{}
		for _, s := range p.Spec.DestinationSelectors {
			base = append(base, s.MatchLabels)
		}
		whole := Placement{Pipeline: out.Name, MatchLabels: base}
		var dirs []Placement
		for _, s := range out.Selectors {
			if s.Directory == "" {
				whole.MatchLabels = append(whole.MatchLabels, s.MatchLabels)
				continue
			}
			dirs = append(dirs, Placement{Pipeline: out.Name, Directory: s.Directory, MatchLabels: append(append([]map[string]string{}, base...), s.MatchLabels)})
		}
		placements = append(placements, whole)
		placements = append(placements, dirs...)
	}
	for name, v := range map[string]any{SnapshotStatus: res.Status, SnapshotDestinations: placements} {
		data, err := yaml.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("marshalling %s: %w", name, err)
		}
		files[name] = data
	}
	return files, nil
}

// WriteSnapshot writes files under dir, replacing what dir held.
func WriteSnapshot(dir string, files map[string][]byte) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clearing %s: %w", dir, err)
	}
	for _, name := range SortedNames(files) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	return nil
}

// ReadSnapshot reads every file under dir.
func ReadSnapshot(dir string) (map[string][]byte, error) {
	return validate.Collect(dir, validate.DefaultLimits)
}

// SortedNames returns the names of a snapshot's files in order.
func SortedNames(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
