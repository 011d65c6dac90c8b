package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metrics is one scrape of the controller's /metrics.
type metrics map[string]*dto.MetricFamily

// scrape reads url (a Prometheus text endpoint).
func scrape(ctx context.Context, url string) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scraping %s: %s: %s", url, resp.Status, b)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	return metrics(fams), nil
}

// labelMatch selects samples by their labels.
type labelMatch func(labels map[string]string) bool

// any matches every sample.
func anyLabels(map[string]string) bool { return true }

// labelPrefix matches samples whose label name starts with prefix.
func labelPrefix(name, prefix string) labelMatch {
	return func(l map[string]string) bool { return strings.HasPrefix(l[name], prefix) }
}

// labelIn matches samples whose label name is one of values.
func labelIn(name string, values ...string) labelMatch {
	return func(l map[string]string) bool {
		for _, v := range values {
			if l[name] == v {
				return true
			}
		}
		return false
	}
}

// sum adds the values (counter, gauge or untyped) of family name's samples
// that match; a missing family sums to 0.
func (m metrics) sum(name string, match labelMatch) float64 {
	f, ok := m[name]
	if !ok {
		return 0
	}
	var total float64
	for _, s := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if !match(labels) {
			continue
		}
		switch {
		case s.Counter != nil:
			total += s.GetCounter().GetValue()
		case s.Gauge != nil:
			total += s.GetGauge().GetValue()
		case s.Untyped != nil:
			total += s.GetUntyped().GetValue()
		case s.Histogram != nil:
			total += float64(s.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// histogram adds the sums and counts of family name's histogram samples
// that match.
func (m metrics) histogram(name string, match labelMatch) (sum, count float64) {
	f, ok := m[name]
	if !ok {
		return 0, 0
	}
	for _, s := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if h := s.GetHistogram(); h != nil && match(labels) {
			sum += h.GetSampleSum()
			count += float64(h.GetSampleCount())
		}
	}
	return sum, count
}

// timing is a histogram's running sum and count.
type timing struct{ Sum, Count float64 }

// mean of the samples between before and t.
func (t timing) meanSince(before timing) float64 {
	if t.Count-before.Count <= 0 {
		return 0
	}
	return (t.Sum - before.Sum) / (t.Count - before.Count)
}

// The controller's metrics the benchmark reads.
const (
	mReconciles    = "controller_runtime_reconcile_total"
	mActiveWorkers = "controller_runtime_active_workers"
	mQueueDepth    = "workqueue_depth"
	mStatusWrites  = "promised_request_status_writes_total"
	mChangedWrites = "promised_statestore_changed_writes_total"
	mRESTRequests  = "rest_client_requests_total"

	mReconcileTime = "controller_runtime_reconcile_time_seconds"
	mQueueWait     = "workqueue_queue_duration_seconds"
	mPipeline      = "promised_pipeline_duration_seconds"
	mStoreWrite    = "promised_statestore_write_duration_seconds"
	mAPILatency    = "rest_client_request_duration_seconds"
	mRateLimiter   = "rest_client_rate_limiter_duration_seconds"
)

// writeMethods are the HTTP methods of apiserver writes.
var writeMethods = []string{"POST", "PUT", "PATCH", "DELETE"}

// counts is what the benchmark reads from one scrape.
type counts struct {
	Reconciles    float64
	StatusWrites  float64
	ChangedWrites float64
	APIWrites     float64
	APIReads      float64
	QueueDepth    float64
	ActiveWorkers float64

	ReconcileTime timing
	QueueWait     timing
	Pipeline      timing
	StoreWrite    timing
	// APILatency is the apiserver requests' time, RateLimited the time
	// they waited for the client-side rate limiter first.
	APILatency  timing
	RateLimited timing
	// PipelineBy is the configure pipelines' time by promise.
	PipelineBy map[string]timing
}

func (m metrics) counts() counts {
	requestCtrl := labelPrefix("controller", "request-")
	return counts{
		Reconciles:    m.sum(mReconciles, requestCtrl),
		StatusWrites:  m.sum(mStatusWrites, anyLabels),
		ChangedWrites: m.sum(mChangedWrites, anyLabels),
		APIWrites:     m.sum(mRESTRequests, labelIn("method", writeMethods...)),
		APIReads:      m.sum(mRESTRequests, labelIn("method", "GET")),
		QueueDepth:    m.sum(mQueueDepth, labelPrefix("name", "request-")),
		ActiveWorkers: m.sum(mActiveWorkers, requestCtrl),
		ReconcileTime: m.timing(mReconcileTime, requestCtrl),
		QueueWait:     m.timing(mQueueWait, labelPrefix("name", "request-")),
		Pipeline:      m.timing(mPipeline, labelIn("action", "configure")),
		StoreWrite:    m.timing(mStoreWrite, anyLabels),
		APILatency:    m.timing(mAPILatency, anyLabels),
		RateLimited:   m.timing(mRateLimiter, anyLabels),
		PipelineBy:    m.timingBy(mPipeline, "promise", labelIn("action", "configure")),
	}
}

// timingBy splits a histogram by one label's values.
func (m metrics) timingBy(name, label string, match labelMatch) map[string]timing {
	out := map[string]timing{}
	f, ok := m[name]
	if !ok {
		return out
	}
	for _, s := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if h := s.GetHistogram(); h != nil && match(labels) {
			t := out[labels[label]]
			t.Sum += h.GetSampleSum()
			t.Count += float64(h.GetSampleCount())
			out[labels[label]] = t
		}
	}
	return out
}

func (m metrics) timing(name string, match labelMatch) timing {
	s, c := m.histogram(name, match)
	return timing{Sum: s, Count: c}
}

// sub is the growth of the counters from before to c (gauges keep c's).
func (c counts) sub(before counts) counts {
	return counts{
		Reconciles:    c.Reconciles - before.Reconciles,
		StatusWrites:  c.StatusWrites - before.StatusWrites,
		ChangedWrites: c.ChangedWrites - before.ChangedWrites,
		APIWrites:     c.APIWrites - before.APIWrites,
		APIReads:      c.APIReads - before.APIReads,
		QueueDepth:    c.QueueDepth,
		ActiveWorkers: c.ActiveWorkers,
	}
}

// byMethod sums rest_client_requests_total by HTTP method.
func (m metrics) byMethod() map[string]float64 {
	out := map[string]float64{}
	f, ok := m[mRESTRequests]
	if !ok {
		return out
	}
	for _, s := range f.GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == "method" {
				out[l.GetValue()] += s.GetCounter().GetValue()
			}
		}
	}
	return out
}

// subMethods is the growth of each method's count from before to after.
func subMethods(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
