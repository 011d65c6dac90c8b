package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The controller's own metrics, served on controller-runtime's /metrics
// beside its reconcile and work-queue metrics (queue depth among them).
var (
	pipelineDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "promised_pipeline_duration_seconds",
		Help:    "Time to run a workflow's pipelines, by promise, action and result.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
	}, []string{"promise", "action", "result"})
	storeWriteDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "promised_statestore_write_duration_seconds",
		Help:    "Time from queuing a state-store write to its push, by result.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
	}, []string{"result"})
	storeCommits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "promised_statestore_changed_writes_total",
		Help: "State-store writes that changed content (and so were part of a commit).",
	})
	statusWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "promised_request_status_writes_total",
		Help: "Request status updates sent to the apiserver.",
	})
)

func init() {
	metrics.Registry.MustRegister(pipelineDuration, storeWriteDuration, storeCommits, statusWrites)
	// Tell a slow apiserver from a controller held back by its own
	// client-side rate limit (--kube-api-qps): both look like slow requests.
	metrics.RegisterRESTClientMetrics(metrics.MetricRequestLatency, metrics.MetricRateLimiterLatency)
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "success"
}

func observePipeline(promise, action string, start time.Time, err error) {
	pipelineDuration.WithLabelValues(promise, action, result(err)).Observe(time.Since(start).Seconds())
}

func observeWrite(start time.Time, changed bool, err error) {
	storeWriteDuration.WithLabelValues(result(err)).Observe(time.Since(start).Seconds())
	if changed {
		storeCommits.Inc()
	}
}

func countStatusWrite() { statusWrites.Inc() }
