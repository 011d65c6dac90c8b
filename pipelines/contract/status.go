package contract

// MergeStatus returns base with overlay merged in the way Kratix merges a
// pipeline's status.yaml: top-level keys overwrite, and "conditions" merge
// by their "type" so a pipeline can update one condition without erasing
// the others. Neither argument is modified.
func MergeStatus(base, overlay map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(overlay))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range overlay {
		if k == "conditions" {
			out[k] = mergeConditions(base[k], v)
			continue
		}
		out[k] = v
	}
	return out
}

func mergeConditions(base, overlay any) any {
	newer, ok := overlay.([]any)
	if !ok {
		return overlay
	}
	older, _ := base.([]any)
	out := make([]any, 0, len(older)+len(newer))
	index := map[string]int{}
	add := func(c any) {
		t := conditionType(c)
		if i, seen := index[t]; seen && t != "" {
			out[i] = c
			return
		}
		if t != "" {
			index[t] = len(out)
		}
		out = append(out, c)
	}
	for _, c := range older {
		add(c)
	}
	for _, c := range newer {
		add(c)
	}
	return out
}

func conditionType(c any) string {
	m, ok := c.(map[string]any)
	if !ok {
		return ""
	}
	t, _ := m["type"].(string)
	return t
}
