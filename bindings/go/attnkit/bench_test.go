package attnkit

import (
	"fmt"
	"testing"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// BenchmarkDecodeAttend times one decode-step Attend of one layer (one new token; 32 query heads
// over 8 kv heads of dim 128, Llama 3 8B's attention) over a full cache of `context` tokens, with
// q, k, v and out in Go slices (staged into C memory and out copied back on every call) and in
// C memory from AllocTensor (passed as they are). A step of an L-layer model makes L such calls.
// Every 256 steps the session is reset and the prompt prefilled again (untimed), so the cache stays
// between context and context+256 tokens whatever b.N is. Run it with
//
//	ctest --test-dir build -R go_bench_decode_attend -V
//
// or `go test -run '^$' -bench DecodeAttend ./attnkit` in build/bindings/go/module.
func BenchmarkDecodeAttend(b *testing.B) {
	const heads, kvHeads, dim, refill = 32, 8, 128, 256
	for _, context := range []int{256, 2048} {
		for _, memory := range []string{"go_slices", "c_memory"} {
			b.Run(fmt.Sprintf("context=%d/%s", context, memory), func(b *testing.B) {
				session, err := NewSession(&attnkitpb.SessionConfig{NumLayers: 1, NumHeads: heads,
					NumKvHeads: kvHeads, HeadDim: dim})
				if err != nil {
					b.Fatal(err)
				}
				defer session.Close()
				prompt := func() {
					t := int64(context)
					q, k, v := filled(heads*context*dim, 0), filled(kvHeads*context*dim, 1), filled(kvHeads*context*dim, 2)
					err := session.Attend(0, NewTensor(q, 1, heads, t, dim), NewTensor(k, 1, kvHeads, t, dim),
						NewTensor(v, 1, kvHeads, t, dim), NewTensor(make([]float32, len(q)), 1, heads, t, dim))
					if err != nil {
						b.Fatal(err)
					}
				}
				var q, k, v, out Tensor
				if memory == "go_slices" {
					q, k = NewTensor(filled(heads*dim, 3), 1, heads, 1, dim), NewTensor(filled(kvHeads*dim, 4), 1, kvHeads, 1, dim)
					v, out = NewTensor(filled(kvHeads*dim, 5), 1, kvHeads, 1, dim), NewTensor(make([]float32, heads*dim), 1, heads, 1, dim)
				} else {
					cq, ck, cv, cout := alloc(b, 3, 1, heads, 1, dim), alloc(b, 4, 1, kvHeads, 1, dim),
						alloc(b, 5, 1, kvHeads, 1, dim), alloc(b, -1, 1, heads, 1, dim)
					defer cq.Close()
					defer ck.Close()
					defer cv.Close()
					defer cout.Close()
					q, k, v, out = cq, ck, cv, cout
				}
				prompt()
				staged := capi.StagedBytes()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if i > 0 && i%refill == 0 {
						b.StopTimer()
						if err := session.Reset(); err != nil {
							b.Fatal(err)
						}
						staged -= capi.StagedBytes()
						prompt()
						staged += capi.StagedBytes()
						b.StartTimer()
					}
					if err := session.Attend(0, q, k, v, out); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(capi.StagedBytes()-staged)/float64(b.N), "copied-B/op")
			})
		}
	}
}

// BenchmarkDecodeStaging isolates what BenchmarkDecodeAttend's two variants differ in: passing one
// decode step's q, k, v and out (the same shapes) across the binding, each checked by
// attnkit_tensor_check (which validates the descriptor and touches no data), so the time is the
// binding's own: staging copies (and out's copy back) for Go slices, descriptors only for C memory.
// `ctest --test-dir build -R go_bench_decode_staging -V`.
func BenchmarkDecodeStaging(b *testing.B) {
	const heads, kvHeads, dim = 32, 8, 128
	names := []string{"q", "k", "v", "out"}
	for _, memory := range []string{"go_slices", "c_memory"} {
		b.Run(memory, func(b *testing.B) {
			var tensors []Tensor
			if memory == "go_slices" {
				tensors = []Tensor{NewTensor(filled(heads*dim, 3), 1, heads, 1, dim),
					NewTensor(filled(kvHeads*dim, 4), 1, kvHeads, 1, dim),
					NewTensor(filled(kvHeads*dim, 5), 1, kvHeads, 1, dim),
					NewTensor(make([]float32, heads*dim), 1, heads, 1, dim)}
			} else {
				for i, shape := range [][]int64{{1, heads, 1, dim}, {1, kvHeads, 1, dim}, {1, kvHeads, 1, dim}, {1, heads, 1, dim}} {
					c := alloc(b, float32(i), shape...)
					defer c.Close()
					tensors = append(tensors, c)
				}
			}
			staged := capi.StagedBytes()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				described, release, err := describeAll(names, tensors, true)
				if err != nil {
					b.Fatal(err)
				}
				for j, d := range described {
					isOutput := 0
					if j == len(described)-1 {
						isOutput = 1
					}
					if err := capi.Attnkit_tensor_check(d, names[j], 4, isOutput); err != nil {
						b.Fatal(err)
					}
				}
				release()
			}
			b.StopTimer()
			b.ReportMetric(float64(capi.StagedBytes()-staged)/float64(b.N), "copied-B/op")
		})
	}
}
