package apiaggregator

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

func targetObject(t *testing.T, name, uid, rv, path string) unstructured.Unstructured {
	t.Helper()
	u := unstructured.Unstructured{Object: map[string]any{
		"apiVersion": APIVersion, "kind": KindTarget,
		"spec": map[string]any{
			"aggregator": map[string]any{"name": "api", "namespace": "platform"},
			"routes":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": path}}},
			"backend":    map[string]any{"name": name, "port": int64(80)},
		},
	}}
	u.SetNamespace("team")
	u.SetName(name)
	u.SetUID(types.UID(uid))
	u.SetResourceVersion(rv)
	return u
}

func cachedPath(tg Target) string { return tg.Spec.Routes[0].Path.Value }

func TestTargetCacheKeysOnUIDAndResourceVersion(t *testing.T) {
	c := &targetCache{entries: map[types.UID]cachedTarget{}}
	u := targetObject(t, "orders", "u1", "1", "/orders")
	got := c.get(&u)
	require.NoError(t, got.ParseError)
	require.NotNil(t, got.judged)
	require.Empty(t, got.judged.invalid)
	require.Len(t, got.judged.claims, 1)

	// Same version: the cached parse answers, not the (changed) object.
	u2 := targetObject(t, "orders", "u1", "1", "/elsewhere")
	require.Equal(t, "/orders", cachedPath(c.get(&u2)))

	// A new version is parsed again.
	u3 := targetObject(t, "orders", "u1", "2", "/elsewhere")
	require.Equal(t, "/elsewhere", cachedPath(c.get(&u3)))

	// Without a UID or version (a local run's files) nothing is cached.
	local := targetObject(t, "local", "", "", "/local")
	require.Equal(t, "/local", cachedPath(c.get(&local)))
	require.NotContains(t, c.entries, types.UID(""))
}

func TestTargetCacheKeepsParseErrors(t *testing.T) {
	c := &targetCache{entries: map[types.UID]cachedTarget{}}
	u := targetObject(t, "broken", "u1", "1", "/x")
	u.Object["spec"] = "not an object"
	got := c.get(&u)
	require.Error(t, got.ParseError)
	// Admission refuses it with the parse error, from the cached entry too.
	again := c.get(&u)
	require.Equal(t, got.ParseError, again.ParseError)
	v := Admit(testAggregator(), []Target{again})
	require.Empty(t, v, "a target whose spec cannot be read names no aggregator, so it is not this one's")
}

func TestTargetCachePrunesTargetsNoLongerListed(t *testing.T) {
	c := &targetCache{entries: map[types.UID]cachedTarget{}}
	var all []unstructured.Unstructured
	for i := range 200 {
		u := targetObject(t, fmt.Sprintf("t%d", i), fmt.Sprintf("u%d", i), "1", fmt.Sprintf("/p%d", i))
		all = append(all, u)
		c.get(&u)
	}
	require.Len(t, c.entries, 200)
	// Within bounds of the listing: no sweep.
	c.prune(all[:100])
	require.Len(t, c.entries, 200)
	c.prune(all[:10])
	require.Len(t, c.entries, 10)
	require.Contains(t, c.entries, types.UID("u3"))
	require.NotContains(t, c.entries, types.UID("u150"))
}

func TestAdmitAgreesWithAndWithoutJudgedTargets(t *testing.T) {
	a := testAggregator()
	plain := []Target{
		target("team", "first", 1, prefix("/orders")),
		target("team", "second", 2, prefix("/orders")),
		target("team", "third", 3, prefix("/billing", "GET")),
	}
	withJudged := make([]Target, len(plain))
	for i, tg := range plain {
		tg.judged = judge(tg)
		withJudged[i] = tg
	}
	require.Equal(t, Admit(a, plain), Admit(a, withJudged))
	require.False(t, Admit(a, withJudged)[Ref{Namespace: "team", Name: "second"}].Admitted)
}
