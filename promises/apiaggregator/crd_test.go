package apiaggregator_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apimachinery/pkg/runtime"

	"promised.dev/promised/pipelines/apischema"
	"promised.dev/promised/pipelines/local"
)

// TestCRDsPassTheAPIServersValidation runs the apiserver's own CRD
// validation (structural schema, defaults checked against the CEL rules,
// CEL compilation and cost budget) on both promises' APIs, in
// milliseconds; the cluster tests then install them for real.
func TestCRDsPassTheAPIServersValidation(t *testing.T) {
	for _, dir := range []string{"aggregator", "target"} {
		t.Run(dir, func(t *testing.T) {
			p, err := local.LoadPromise(dir)
			require.NoError(t, err)
			crd, err := apischema.CRD(p)
			require.NoError(t, err)
			// The controller adds a status subresource and an open status
			// schema to every promise API; the promise files already have both.
			scheme := runtime.NewScheme()
			require.NoError(t, apiextensionsv1.AddToScheme(scheme))
			require.NoError(t, apiextensions.AddToScheme(scheme))
			apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(crd)
			internal := &apiextensions.CustomResourceDefinition{}
			require.NoError(t, scheme.Convert(crd, internal, nil))
			errs := apiextensionsvalidation.ValidateCustomResourceDefinition(context.Background(), internal)
			require.Empty(t, errs, "%v", errs.ToAggregate())
		})
	}
}
