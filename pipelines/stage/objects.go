package stage

import (
	"context"
	"errors"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Objects lets a stage read other requests on the platform, such as every
// target of the aggregator it renders, without a client of its own. The
// controller serves it from its cache and only for kinds that promises
// serve; a local run serves it from files.
type Objects interface {
	// List returns every object of a kind, across namespaces, sorted by
	// namespace and name. The objects may be shared with the caller's
	// cache: read them, and DeepCopy one before changing it.
	List(ctx context.Context, apiVersion, kind string) ([]unstructured.Unstructured, error)
}

// WithObjects gives stages read access to platform objects (nil: none).
func WithObjects(o Objects) Option { return func(c *Context) { c.objects = o } }

// ErrNoObjects is returned by Context.Objects where the platform gives no
// object access: a stage run as a container, or a local run without an
// objects folder.
var ErrNoObjects = errors.New("no access to platform objects here: stages that read other requests run in-process, in the controller or in a local run given an objects folder")

// Objects returns read access to the platform's requests.
func (c *Context) Objects() (Objects, error) {
	if c == nil || c.objects == nil {
		return nil, ErrNoObjects
	}
	return c.objects, nil
}
