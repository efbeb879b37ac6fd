package attnkit

import (
	"testing"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
)

// Dense mode through BuildMask + Attention agrees with Prefill, and with a session's attention.
func TestSparseDenseMatchesSession(t *testing.T) {
	sparse, err := NewSparseAttention(&attnkitpb.SparseAttentionConfig{Mode: attnkitpb.SparseAttentionMode_DENSE, BlockSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sparse.Close()
	const tokens = 10
	heads, qBlocks, kBlocks, err := sparse.MaskShape(4, tokens, tokens)
	if err != nil || heads != 1 || qBlocks != 3 || kBlocks != 3 {
		t.Fatalf("mask shape %d %d %d, %v", heads, qBlocks, kBlocks, err)
	}
	q := NewTensor(filled(4*tokens*8, 0), 1, 4, tokens, 8)
	k := NewTensor(filled(2*tokens*8, 1), 1, 2, tokens, 8)
	v := NewTensor(filled(2*tokens*8, 2), 1, 2, tokens, 8)
	mask := &Uint8Tensor{Data: make([]uint8, 9), Shape: []int64{1, 1, 3, 3}}
	if err := sparse.BuildMask(q, k, mask); err != nil {
		t.Fatal(err)
	}
	if mask.Data[0] != 1 || mask.Data[8] != 1 || mask.Data[1] != 0 {
		t.Fatalf("dense block-causal mask %v", mask.Data)
	}
	out := NewTensor(make([]float32, 4*tokens*8), 1, 4, tokens, 8)
	if err := sparse.Attention(q, k, v, mask, 0, out); err != nil {
		t.Fatal(err)
	}
	prefill := NewTensor(make([]float32, 4*tokens*8), 1, 4, tokens, 8)
	density, err := sparse.Prefill(q, k, v, 0, prefill)
	if err != nil || density != 1 {
		t.Fatalf("density %v, %v", density, err)
	}
	s, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want, err := attend(s, 0, tokens, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for _, got := range []float32{out.Data[i], prefill.Data[i]} {
			if d := got - want[i]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("element %d: sparse %v, session %v", i, got, want[i])
			}
		}
	}
	// A mask of the wrong shape is an error.
	asError(t, sparse.Attention(q, k, v, &Uint8Tensor{Data: make([]uint8, 4), Shape: []int64{1, 1, 2, 2}}, 0, out), InvalidArgument)
}
