package contract_test

import (
	"encoding/json"
	"strings"
	"testing"

	"promised.dev/promised/pipelines/contract"
)

// FuzzParseSelectors: whatever a stage writes as destination-selectors.yaml,
// parsing never panics, and what it accepts names only top-level folders
// and valid labels.
func FuzzParseSelectors(f *testing.F) {
	f.Add([]byte("- matchLabels: {env: dev}\n"))
	f.Add([]byte("- directory: prod\n  matchLabels: {env: prod, tier: web}\n- matchLabels: {}\n"))
	f.Add([]byte("- directory: ../x\n  matchLabels: {a: b}\n"))
	f.Add([]byte("- directory: a/b\n  matchLabels: {\"bad key\": x}\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sels, err := contract.ParseSelectors(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, s := range sels {
			if strings.ContainsAny(s.Directory, "/\\") || s.Directory == "." || s.Directory == ".." {
				t.Fatalf("accepted directory %q", s.Directory)
			}
			if seen[s.Directory] {
				t.Fatalf("accepted directory %q twice", s.Directory)
			}
			seen[s.Directory] = true
			if err := contract.CheckLabels(s.MatchLabels); err != nil {
				t.Fatalf("accepted invalid labels: %v", err)
			}
		}
	})
}

// FuzzMergeStatus: merging two status maps never panics, never modifies
// its inputs, keeps every key of both, takes the overlay's value for
// every key but conditions, and keeps one condition per type.
func FuzzMergeStatus(f *testing.F) {
	f.Add([]byte(`{"a":1,"conditions":[{"type":"X","status":"True"}]}`), []byte(`{"a":2,"conditions":[{"type":"X","status":"False"},{"type":"Y"}]}`))
	f.Add([]byte(`{"conditions":"not a list"}`), []byte(`{"conditions":[1,2,{"type":3}]}`))
	f.Add([]byte(`{}`), []byte(`{"message":"hi"}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var base, overlay map[string]any
		if json.Unmarshal(a, &base) != nil || json.Unmarshal(b, &overlay) != nil {
			return
		}
		before, _ := json.Marshal(base)
		out := contract.MergeStatus(base, overlay)
		if after, _ := json.Marshal(base); string(after) != string(before) {
			t.Fatalf("base was modified")
		}
		for k := range base {
			if _, ok := out[k]; !ok {
				t.Fatalf("lost key %q of base", k)
			}
		}
		for k, v := range overlay {
			got, ok := out[k]
			if !ok {
				t.Fatalf("lost key %q of overlay", k)
			}
			if k != "conditions" {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(v)
				if string(g) != string(w) {
					t.Fatalf("key %q: got %s, want the overlay's %s", k, g, w)
				}
			}
		}
		if conds, ok := out["conditions"].([]any); ok {
			types := map[string]bool{}
			for _, c := range conds {
				m, ok := c.(map[string]any)
				if !ok {
					continue
				}
				ty, ok := m["type"].(string)
				if !ok || ty == "" {
					continue
				}
				if types[ty] {
					t.Fatalf("condition type %q twice", ty)
				}
				types[ty] = true
			}
		}
	})
}
