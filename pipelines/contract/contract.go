// Package contract is the Kratix pipeline container contract: the folders a
// stage reads and writes and the environment it is given. Inside a container
// the folders live under /kratix; outside one (a subprocess, an in-process
// stage, a test) they live under the directory named by RootEnv, so one
// stage binary runs unchanged in all three places.
package contract

import (
	"fmt"
	"os"
	"path/filepath"
)

// ContainerRoot is where the contract's folders are mounted in a container.
const ContainerRoot = "/kratix"

// RootEnv names the variable that roots the contract's folders outside a
// container.
const RootEnv = "PROMISED_KRATIX_ROOT"

// Folder and file names under the root, fixed by the Kratix contract except
// for previous/, which is promised's addition.
const (
	InputDir            = "input"
	OutputDir           = "output"
	MetadataDir         = "metadata"
	PreviousDir         = "previous"
	ObjectFile          = "object.yaml"
	SelectorsFile       = "destination-selectors.yaml"
	StatusFile          = "status.yaml"
	WorkflowControlFile = "workflow-control.yaml"
)

// Workspace is one pipeline run's /kratix tree on local disk.
type Workspace struct {
	// Root is the folder holding input/, output/, metadata/ and previous/.
	Root string
}

// Input is the folder holding object.yaml.
func (w Workspace) Input() string { return filepath.Join(w.Root, InputDir) }

// Output is the folder whose every file becomes pipeline output.
func (w Workspace) Output() string { return filepath.Join(w.Root, OutputDir) }

// Metadata is the folder holding selectors, status and workflow control.
func (w Workspace) Metadata() string { return filepath.Join(w.Root, MetadataDir) }

// Previous is the folder holding what this request's pipeline wrote last
// time, read back from the state store.
func (w Workspace) Previous() string { return filepath.Join(w.Root, PreviousDir) }

// ObjectPath is the path of the input object.
func (w Workspace) ObjectPath() string { return filepath.Join(w.Input(), ObjectFile) }

// Create makes the four folders, readable by the stage's user only.
func (w Workspace) Create() error {
	for _, d := range []string{w.Input(), w.Output(), w.Metadata(), w.Previous()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating pipeline workspace folder %s: %w", d, err)
		}
	}
	return nil
}

// CurrentWorkspace is the workspace of a stage process: RootEnv when set,
// the container root otherwise.
func CurrentWorkspace(getenv func(string) string) Workspace {
	if root := getenv(RootEnv); root != "" {
		return Workspace{Root: root}
	}
	return Workspace{Root: ContainerRoot}
}
