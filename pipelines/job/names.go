package job

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Labels the runner puts on everything it creates, so that
// `kubectl get jobs,pods,secrets,configmaps -l promised.dev/run=NAME`
// shows one run and `-l promised.dev/promise=NAME` one promise's runs.
const (
	// LabelPromise carries the promise's name (shortened when too long for
	// a label value; the annotations hold it in full).
	LabelPromise = "promised.dev/promise"
	// LabelPipeline carries the pipeline's name.
	LabelPipeline = "promised.dev/pipeline"
	// LabelRequest carries the request's name; empty for promise workflows.
	LabelRequest = "promised.dev/request"
	// LabelRun carries the run's id, which is also the Job's name.
	LabelRun = "promised.dev/run"
	// LabelChunk carries a hand-off chunk's index, from 0.
	LabelChunk = "promised.dev/chunk"
	// LabelManagedBy marks what the runner owns.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "promised"
)

// Annotations holding what labels cannot: full names, and the hand-back's
// bookkeeping.
const (
	annotationPrefix = "job.promised.dev/"
	annPromise       = annotationPrefix + "promise"
	annRequest       = annotationPrefix + "request"
	annPipeline      = annotationPrefix + "pipeline"
	// AnnotationChunks is the number of chunks of a hand-off.
	AnnotationChunks = annotationPrefix + "chunks"
	// AnnotationMAC is the HMAC-SHA256 of the whole hand-off, keyed with the
	// run's secret key: the runner accepts output only from its own run's
	// writer.
	AnnotationMAC = annotationPrefix + "mac"
)

// maxName is the longest name the runner gives anything. Job names must
// fit a pod label value (63 characters), and every other object is kept to
// the same length so `kubectl get` output stays readable.
const maxName = 63

// runSuffixLen is the length of a run id's random part: 8 characters of
// base 36 make a collision between two runs of the same pipeline of the
// same request vanishingly unlikely.
const runSuffixLen = 8

// jobName names the Job of one run: readable parts of the promise and
// pipeline names, a hash of promise/namespace/request/pipeline (so two
// requests never share a name prefix by accident) and a random suffix (so
// every run is a new Job). The result is a valid DNS label.
func jobName(promise, namespace, request, pipeline string) (string, error) {
	suffix, err := randomSuffix(runSuffixLen)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(promise + "/" + namespace + "/" + request + "/" + pipeline))
	parts := []string{}
	for _, p := range []string{dnsPart(promise, 16), dnsPart(pipeline, 16)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	parts = append(parts, hex.EncodeToString(h[:4]), suffix)
	return strings.Join(parts, "-"), nil
}

// objectName joins parts into a DNS label of at most maxName characters,
// replacing the tail with a hash of the whole when it is too long, so two
// long names that share a prefix still get different objects.
func objectName(parts ...string) string {
	full := strings.Join(parts, "-")
	name := dnsPart(full, maxName)
	if name == full {
		return name
	}
	h := sha256.Sum256([]byte(full))
	return strings.Trim(dnsPart(full, maxName-11), "-") + "-" + hex.EncodeToString(h[:5])
}

// hashedName is a readable name made unambiguous by a hash of its parts:
// "promised-a-b-c" alone could be promise "a-b" with pipeline "c" or
// promise "a" with pipeline "b-c", whose Roles must not overwrite each
// other. The readable part is cut to fit maxName.
func hashedName(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return strings.Trim(dnsPart(strings.Join(parts, "-"), maxName-9), "-") + "-" + hex.EncodeToString(h[:4])
}

// labelValue shortens v to a valid label value, keeping a hash of the
// whole when it has to cut.
func labelValue(v string) string {
	if len(v) <= maxName && dnsPart(v, maxName) == v {
		return v
	}
	h := sha256.Sum256([]byte(v))
	short := strings.Trim(dnsPart(v, maxName-11), "-")
	if short == "" {
		return hex.EncodeToString(h[:5])
	}
	return short + "-" + hex.EncodeToString(h[:5])
}

// dnsPart lowercases s, replaces anything but [a-z0-9-] with '-', cuts it
// to n characters and trims dashes from both ends.
func dnsPart(s string, n int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		default:
			c = '-'
		}
		b = append(b, c)
	}
	if len(b) > n {
		b = b[:n]
	}
	return strings.Trim(string(b), "-")
}

// randomSuffix returns n random characters of [a-z0-9].
func randomSuffix(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("naming the run: %w", err)
	}
	for i := range b {
		// 256 is not a multiple of 36; the slight bias is irrelevant for a
		// name suffix.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}
