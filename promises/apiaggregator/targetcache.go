package apiaggregator

import (
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// judged is what admission needs of a target, worked out once per version
// of the target's object.
type judged struct {
	// invalid is ValidateTarget's verdict, "" when the spec is valid.
	invalid string
	claims  []claim
}

func judge(t Target) *judged {
	j := &judged{claims: claimsOf(t.Spec)}
	if errs := ValidateTarget(t); len(errs) > 0 {
		j.invalid = errs.ToAggregate().Error()
	}
	return j
}

// targetCache keeps targets parsed and judged, by UID and resourceVersion.
// Every target's stage judges every target of its aggregator, so without
// it N targets cost N² spec decodes and validations: at 2,500 targets that
// was most of the controller's CPU. An object's resourceVersion changes
// with any change to it, its deletion timestamp included, so an entry is
// never stale for the version it is keyed by.
type targetCache struct {
	mu      sync.Mutex
	entries map[types.UID]cachedTarget
}

type cachedTarget struct {
	resourceVersion string
	target          Target
}

// parsedTargets serves the target stage of every run in this process.
var parsedTargets = &targetCache{entries: map[types.UID]cachedTarget{}}

// get returns u parsed and judged. Objects without a UID or a
// resourceVersion (a local run's files may have neither) are parsed each
// time. The Target returned shares its spec with the cache: read it only.
func (c *targetCache) get(u *unstructured.Unstructured) Target {
	// One lookup of metadata, not one per field (GetUID, ...): this runs
	// for every target in every target's run.
	meta, _ := u.Object["metadata"].(map[string]any)
	uidValue, _ := meta["uid"].(string)
	rv, _ := meta["resourceVersion"].(string)
	uid := types.UID(uidValue)
	if uid == "" || rv == "" {
		return parseJudged(u)
	}
	c.mu.Lock()
	e, ok := c.entries[uid]
	c.mu.Unlock()
	if ok && e.resourceVersion == rv {
		return e.target
	}
	t := parseJudged(u)
	c.mu.Lock()
	c.entries[uid] = cachedTarget{resourceVersion: rv, target: t}
	c.mu.Unlock()
	return t
}

func parseJudged(u *unstructured.Unstructured) Target {
	t, err := ParseTarget(u)
	// A target whose spec cannot be read claims nothing; it is its own
	// stage's business to fail.
	t.ParseError = err
	if err == nil {
		t.judged = judge(t)
	}
	return t
}

// prune drops the entries of targets no longer listed, once the cache
// holds well over the listing: deleted targets do not pile up, and a
// listing does not pay for a sweep each time.
func (c *targetCache) prune(listed []unstructured.Unstructured) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) <= 2*len(listed)+64 {
		return
	}
	live := make(map[types.UID]bool, len(listed))
	for i := range listed {
		live[listed[i].GetUID()] = true
	}
	for uid := range c.entries {
		if !live[uid] {
			delete(c.entries, uid)
		}
	}
}
