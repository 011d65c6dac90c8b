package job

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestJobNamesAreUniqueDNSLabels(t *testing.T) {
	long := strings.Repeat("Very.Long_Promise", 20)
	seen := map[string]bool{}
	for _, c := range [][4]string{
		{"team", "default", "payments", "configure"},
		{long, "default", long, long},
		{"ÜBER", "ns", "r", "--"},
		{"", "", "", ""},
	} {
		for range 50 {
			name, err := jobName(c[0], c[1], c[2], c[3])
			require.NoError(t, err)
			require.Empty(t, validation.IsDNS1123Label(name), name)
			require.False(t, seen[name], "%s repeated", name)
			seen[name] = true
		}
	}
	a, _ := jobName("team", "default", "payments", "configure")
	b, _ := jobName("team", "default", "payments", "configure")
	require.True(t, strings.HasPrefix(a, "team-configure-"), a)
	require.Equal(t, a[:len(a)-runSuffixLen], b[:len(b)-runSuffixLen], "same request, same prefix")
	c, _ := jobName("team", "other", "payments", "configure")
	require.NotEqual(t, a[:len(a)-runSuffixLen], c[:len(c)-runSuffixLen], "the hash tells requests apart")
}

func TestObjectNamesAndLabelValues(t *testing.T) {
	require.Equal(t, "promised-team-pipeline", objectName("promised", "team", "pipeline"))
	long := objectName("promised", strings.Repeat("a", 80), "pipeline")
	require.Len(t, long, maxName)
	require.Empty(t, validation.IsDNS1123Label(long))
	require.NotEqual(t, long, objectName("promised", strings.Repeat("a", 80), "pipelinf"), "cut names keep a hash of the whole")
	require.Empty(t, validation.IsDNS1123Label(objectName("promised", "Team.Example.Com", "pipeline")))

	require.Equal(t, "payments", labelValue("payments"))
	for _, v := range []string{strings.Repeat("x", 100), "a.b_c", "---", "Ü"} {
		require.Empty(t, validation.IsValidLabelValue(labelValue(v)), v)
	}
}

func TestHashedNamesAreUnambiguous(t *testing.T) {
	a, b := hashedName("promised", "a-b", "c"), hashedName("promised", "a", "b-c")
	require.NotEqual(t, a, b)
	require.True(t, strings.HasPrefix(a, "promised-a-b-c-"), a)
	require.NotEqual(t, hashedName("promised", "team", "handback"), objectName("promised", "team", "handback"))
	long := hashedName("promised", strings.Repeat("p", 100), "pipeline", "namespace")
	require.LessOrEqual(t, len(long), maxName)
	require.Empty(t, validation.IsDNS1123Label(long))
}
