package seal_test

import (
	"fmt"
	"testing"

	"promised.dev/promised/pipelines/seal"
)

const benchSecrets = 20

// benchFiles is an output of benchSecrets Secrets of three keys each,
// one file apiece.
func benchFiles() map[string][]byte {
	files := map[string][]byte{}
	for i := range benchSecrets {
		files[fmt.Sprintf("app/secret-%02d.yaml", i)] = fmt.Appendf(nil, `apiVersion: v1
kind: Secret
metadata:
  name: creds-%02d
  namespace: payments
  labels: {app: api}
stringData:
  user: user-%02d
  password: correct-horse-battery-staple-%02d
  url: nats://nats.payments.svc:4222
`, i, i, i)
	}
	return files
}

// The sealed-secrets controller generates 4096-bit keys; the benchmarks
// use one so the figures are the ones a platform sees.
func benchConfig(b *testing.B) seal.Config {
	k := newSealingKey(b, 4096)
	return k.config("")
}

func reportPerSecret(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchSecrets), "ns/secret")
}

// BenchmarkSealFresh measures sealing with no previous output: one RSA-OAEP
// and one AES-GCM encryption per key, plus parsing and marshalling.
func BenchmarkSealFresh(b *testing.B) {
	cfg, files := benchConfig(b), benchFiles()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := seal.SealFiles(cfg, files, nil); err != nil {
			b.Fatal(err)
		}
	}
	reportPerSecret(b)
}

// BenchmarkSealGuardHit measures the no-change re-run: every Secret's
// fingerprint matches the previous output, so nothing is encrypted.
func BenchmarkSealGuardHit(b *testing.B) {
	cfg, files := benchConfig(b), benchFiles()
	previous, _, err := seal.SealFiles(cfg, files, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, report, err := seal.SealFiles(cfg, files, previous)
		if err != nil {
			b.Fatal(err)
		}
		if !report[0].Reused {
			b.Fatal("guard missed")
		}
	}
	reportPerSecret(b)
}
