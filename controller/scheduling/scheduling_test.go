package scheduling_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/controller/scheduling"
)

var (
	dev    = scheduling.Destination{Name: "dev", Labels: map[string]string{"env": "dev", "region": "eu"}}
	prod   = scheduling.Destination{Name: "prod", Labels: map[string]string{"env": "prod", "region": "eu"}}
	strict = scheduling.Destination{Name: "vault", Labels: map[string]string{"env": "secure"}, Strict: true}
)

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    scheduling.Destination
		sel  []map[string]string
		want bool
	}{
		{"no selectors match everything", dev, nil, true},
		{"empty selector maps count as none", dev, []map[string]string{{}}, true},
		{"strict destinations need selectors", strict, nil, false},
		{"strict destination selected explicitly", strict, []map[string]string{{"env": "secure"}}, true},
		{"all labels of a set", dev, []map[string]string{{"env": "dev", "region": "eu"}}, true},
		{"one label differs", dev, []map[string]string{{"env": "dev", "region": "us"}}, false},
		{"every set must match", dev, []map[string]string{{"env": "dev"}, {"region": "us"}}, false},
		{"missing label", dev, []map[string]string{{"gpu": "true"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, scheduling.Matches(tc.d, tc.sel))
		})
	}
}

func TestAll(t *testing.T) {
	got := scheduling.All([]scheduling.Group{
		{Selectors: []map[string]string{{"region": "eu"}}},
		{Directory: "prod-only", Selectors: []map[string]string{{"env": "prod"}}},
		{Directory: "nowhere", Selectors: []map[string]string{{"env": "mars"}}},
	}, []scheduling.Destination{prod, dev, strict})
	require.Equal(t, map[string][]string{"": {"dev", "prod"}, "prod-only": {"prod"}, "nowhere": {}}, got)
}

func TestOneIsDeterministicAndSticky(t *testing.T) {
	groups := []scheduling.Group{{Selectors: []map[string]string{{"region": "eu"}}}}
	dests := []scheduling.Destination{dev, prod}

	// Deterministic whatever the order of destinations.
	a, err := scheduling.One("uid-1", groups, dests, nil)
	require.NoError(t, err)
	b, err := scheduling.One("uid-1", groups, []scheduling.Destination{prod, dev}, nil)
	require.NoError(t, err)
	require.Equal(t, a, b)

	// Spread: many requests land on both destinations.
	counts := map[string]int{}
	placed := map[string]string{}
	for i := range 1000 {
		key := fmt.Sprintf("uid-%d", i)
		got, err := scheduling.One(key, groups, dests, nil)
		require.NoError(t, err)
		counts[got[""]]++
		placed[key] = got[""]
	}
	require.Greater(t, counts["dev"], 400)
	require.Greater(t, counts["prod"], 400)

	// A new matching destination moves nothing that is already placed.
	eu2 := scheduling.Destination{Name: "eu2", Labels: map[string]string{"region": "eu"}}
	for key, was := range placed {
		got, err := scheduling.One(key, groups, append(dests, eu2), map[string]string{"": was})
		require.NoError(t, err)
		require.Equal(t, was, got[""])
	}

	// A destination that stops matching loses its requests, and only those.
	for key, was := range placed {
		got, err := scheduling.One(key, groups, []scheduling.Destination{dev, {Name: "prod", Labels: map[string]string{"region": "us"}}}, map[string]string{"": was})
		require.NoError(t, err)
		require.Equal(t, "dev", got[""])
	}
}

func TestOneWithoutMatch(t *testing.T) {
	_, err := scheduling.One("uid", []scheduling.Group{{Directory: "gpu", Selectors: []map[string]string{{"gpu": "true", "env": "prod"}}}}, []scheduling.Destination{dev, strict}, nil)
	var nm *scheduling.NoMatchError
	require.ErrorAs(t, err, &nm)
	require.Equal(t, `no destination matches the selectors of folder "gpu" of the output: env=prod,gpu=true`, err.Error())
}
