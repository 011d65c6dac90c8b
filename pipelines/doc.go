// Package pipelines runs a promise's workflows: it lays out the Kratix
// contract's folders for each pipeline, runs the pipeline's containers in
// order through a runner (in-process, subprocess, Docker, or a Kubernetes
// Job), validates what they produced and returns it, writing nothing
// anywhere else. The controller and the CLI run the same code, so what
// `promised render` prints is what the controller would write.
package pipelines
