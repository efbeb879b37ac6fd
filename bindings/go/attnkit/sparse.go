package attnkit

import (
	"runtime"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// SparseAttention builds block masks for long prompts (A-shape, Tri-shape, XAttention,
// FlexPrefill) and runs the block-sparse attention kernel over them. Immutable after creation.
type SparseAttention struct {
	h handle
}

// NewSparseAttention creates a sparse attention policy from a typed config.
func NewSparseAttention(config *attnkitpb.SparseAttentionConfig) (*SparseAttention, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	if config == nil {
		return nil, newError(InvalidArgument, "NewSparseAttention: nil config")
	}
	bytes, err := marshal(config)
	if err != nil {
		return nil, err
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_sparse_attention_create(bytes, &ptr)); err != nil {
		return nil, err
	}
	return newSparseAttention(ptr), nil
}

// NewSparseAttentionFromText creates a policy from an attnkit.v1.SparseAttentionConfig textproto.
func NewSparseAttentionFromText(text string) (*SparseAttention, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_sparse_attention_create_from_text(text, &ptr)); err != nil {
		return nil, err
	}
	return newSparseAttention(ptr), nil
}

func newSparseAttention(ptr uintptr) *SparseAttention {
	s := &SparseAttention{}
	s.h.set(ptr, capi.Attnkit_sparse_attention_free, "SparseAttention")
	runtime.SetFinalizer(s, (*SparseAttention).Close)
	return s
}

// Close frees the policy. Closing again returns nil.
func (s *SparseAttention) Close() error {
	runtime.SetFinalizer(s, nil)
	return s.h.close()
}

// MaskShape returns the mask shape BuildMask writes for numHeads query heads, qLen queries and kLen
// keys: [batch, maskHeads, qBlocks, kBlocks].
func (s *SparseAttention) MaskShape(numHeads, qLen, kLen int64) (maskHeads, qBlocks, kBlocks int64, err error) {
	heads, q, k := []int64{0}, []int64{0}, []int64{0}
	err = s.h.use("MaskShape", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_sparse_attention_mask_shape(ptr, numHeads, qLen, kLen, heads, q, k))
	})
	return heads[0], q[0], k[0], err
}

// BuildMask writes the block mask of q [batch, heads, q_len, dim] and k [batch, kv_heads, k_len,
// dim] into mask ([batch, maskHeads, qBlocks, kBlocks], see MaskShape) as 0/1.
func (s *SparseAttention) BuildMask(q, k Tensor, mask *Uint8Tensor) error {
	tensors, release, err := describeAll([]string{"q", "k", "mask_out"}, []Tensor{q, k, mask}, true)
	if err != nil {
		return err
	}
	defer release()
	return s.h.use("BuildMask", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_sparse_attention_build_mask(ptr, tensors[0], tensors[1], tensors[2]))
	})
}

// Attention computes causal attention restricted to mask's blocks into out. scale 0 means
// 1/sqrt(head_dim).
func (s *SparseAttention) Attention(q, k, v Tensor, mask Tensor, scale float64, out Tensor) error {
	tensors, release, err := describeAll([]string{"q", "k", "v", "mask", "out"}, []Tensor{q, k, v, mask, out}, true)
	if err != nil {
		return err
	}
	defer release()
	return s.h.use("Attention", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_sparse_attention_attention(ptr, tensors[0], tensors[1], tensors[2],
			tensors[3], scale, tensors[4]))
	})
}

// Prefill is BuildMask and Attention in one call; it returns the fraction of block-causal blocks
// computed (1 when dense).
func (s *SparseAttention) Prefill(q, k, v Tensor, scale float64, out Tensor) (float64, error) {
	tensors, release, err := describeAll([]string{"q", "k", "v", "out"}, []Tensor{q, k, v, out}, true)
	if err != nil {
		return 0, err
	}
	defer release()
	density := []float64{0}
	err = s.h.use("Prefill", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_sparse_attention_prefill(ptr, tensors[0], tensors[1], tensors[2], scale,
			tensors[3], density))
	})
	return density[0], err
}
