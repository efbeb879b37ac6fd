package attnkit

import (
	"runtime"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// EvictionPolicy decides which KV cache tokens to keep, for hosts that keep their own cache and
// kernels: per step and layer, Observe the attention weights, then Select the positions to keep.
type EvictionPolicy struct {
	h handle
}

// NewEvictionPolicy creates a policy for every layer of a model of numLayers layers, numHeads query
// heads and numKVHeads kv heads.
func NewEvictionPolicy(config *attnkitpb.EvictionConfig, numLayers, numHeads, numKVHeads int) (*EvictionPolicy, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	if config == nil {
		return nil, newError(InvalidArgument, "NewEvictionPolicy: nil config")
	}
	bytes, err := marshal(config)
	if err != nil {
		return nil, err
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_eviction_policy_create(bytes, numLayers, numHeads, numKVHeads, &ptr)); err != nil {
		return nil, err
	}
	return newEvictionPolicy(ptr), nil
}

// NewEvictionPolicyFromText is NewEvictionPolicy from an attnkit.v1.EvictionConfig textproto.
func NewEvictionPolicyFromText(text string, numLayers, numHeads, numKVHeads int) (*EvictionPolicy, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_eviction_policy_create_from_text(text, numLayers, numHeads, numKVHeads, &ptr)); err != nil {
		return nil, err
	}
	return newEvictionPolicy(ptr), nil
}

func newEvictionPolicy(ptr uintptr) *EvictionPolicy {
	p := &EvictionPolicy{}
	p.h.set(ptr, capi.Attnkit_eviction_policy_free, "EvictionPolicy")
	runtime.SetFinalizer(p, (*EvictionPolicy).Close)
	return p
}

// Close frees the policy. Closing again returns nil.
func (p *EvictionPolicy) Close() error {
	runtime.SetFinalizer(p, nil)
	return p.h.close()
}

// Observe adds one step's attention weights of layer, [batch, heads, queries, cache_tokens], to its
// scores. lengths (one per kv head, or nil) gives per-head cache lengths for per-head policies.
func (p *EvictionPolicy) Observe(layer int, attention Tensor, lengths []int64) error {
	tensors, release, err := describeAll([]string{"attention"}, []Tensor{attention}, false)
	if err != nil {
		return err
	}
	defer release()
	return p.h.use("Observe", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_eviction_policy_observe(ptr, layer, tensors[0], lengths))
	})
}

// Select decides what layer keeps: the kept cache positions (ascending) per row, one row for
// layer-wide policies or one per kv head. lengths is the cache length (one entry) or one per kv
// head; keys ([kv_heads, cache_tokens, head_dim]) is needed when NeedsKeys says so, else nil.
func (p *EvictionPolicy) Select(layer int, keys Tensor, lengths []int64) ([][]int64, error) {
	tensors, release, err := describeAll([]string{"keys"}, []Tensor{keys}, false)
	if err != nil {
		return nil, err
	}
	defer release()
	var rows [][]int64
	err = p.h.use("Select", func(ptr uintptr) error {
		var kept uintptr
		if err := fromCapi(capi.Attnkit_eviction_policy_select(ptr, layer, tensors[0], lengths, &kept)); err != nil {
			return err
		}
		defer capi.Attnkit_kept_positions_free(kept)
		rows = make([][]int64, capi.Attnkit_kept_positions_num_rows(kept))
		for i := range rows {
			var size uint64
			data := capi.Attnkit_kept_positions_row(kept, int64(i), &size)
			rows[i] = capi.CopyInt64s(data, int(size))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

// NeedsKeys reports whether Select needs the keys (DIVERSEKV, KNORM, KEYDIFF).
func (p *EvictionPolicy) NeedsKeys() (bool, error) {
	var needs bool
	err := p.h.use("NeedsKeys", func(ptr uintptr) error {
		needs = capi.Attnkit_eviction_policy_needs_keys(ptr) != 0
		return nil
	})
	return needs, err
}

// PerHead reports whether every kv head keeps its own tokens.
func (p *EvictionPolicy) PerHead() (bool, error) {
	var perHead bool
	err := p.h.use("PerHead", func(ptr uintptr) error {
		perHead = capi.Attnkit_eviction_policy_per_head(ptr) != 0
		return nil
	})
	return perHead, err
}

// LayerBudget returns the tokens layer may hold per kv head after an eviction.
func (p *EvictionPolicy) LayerBudget(layer int) (int64, error) {
	budget := []int64{0}
	err := p.h.use("LayerBudget", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_eviction_policy_layer_budget(ptr, layer, budget))
	})
	return budget[0], err
}

// Reset forgets every layer's scores (a new prompt).
func (p *EvictionPolicy) Reset() error {
	return p.h.use("Reset", func(ptr uintptr) error { return fromCapi(capi.Attnkit_eviction_policy_reset(ptr)) })
}
