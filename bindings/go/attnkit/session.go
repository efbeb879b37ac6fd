package attnkit

import (
	"runtime"

	"google.golang.org/protobuf/proto"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// Session wraps a generation loop's attention: it owns the KV cache of every layer, computes
// attention and applies the eviction and sparse attention policies of its SessionConfig. Close it
// when done.
type Session struct {
	h handle
}

// NewSession creates a session from a typed config (model shape and policies).
func NewSession(config *attnkitpb.SessionConfig) (*Session, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	if config == nil {
		return nil, newError(InvalidArgument, "NewSession: nil config")
	}
	bytes, err := marshal(config)
	if err != nil {
		return nil, err
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_session_create(bytes, &ptr)); err != nil {
		return nil, err
	}
	return newSession(ptr), nil
}

// NewSessionFromText creates a session from an attnkit.v1.SessionConfig textproto.
func NewSessionFromText(text string) (*Session, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_session_create_from_text(text, &ptr)); err != nil {
		return nil, err
	}
	return newSession(ptr), nil
}

func newSession(ptr uintptr) *Session {
	s := &Session{}
	s.h.set(ptr, capi.Attnkit_session_free, "Session")
	runtime.SetFinalizer(s, (*Session).Close)
	return s
}

// Close frees the session and its cache. Closing again returns nil.
func (s *Session) Close() error {
	runtime.SetFinalizer(s, nil)
	return s.h.close()
}

// Attend runs one attention call of layer (layers in order within a step, from 0): q is
// [batch, heads, tokens, head_dim], k and v [batch, kv_heads, tokens, head_dim] for the new tokens
// (RoPE applied); out (q's shape) receives causal attention over the cache and the new tokens.
// Afterwards the layer evicts down to its budget when over it.
func (s *Session) Attend(layer int, q, k, v, out Tensor) error {
	tensors, release, err := describeAll([]string{"q", "k", "v", "out"}, []Tensor{q, k, v, out}, true)
	if err != nil {
		return err
	}
	defer release()
	return s.h.use("Attend", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_attend(ptr, layer, tensors[0], tensors[1], tensors[2], tensors[3]))
	})
}

// AttendRagged runs a ragged call of layer (continuous batching): sequence b brings newTokens[b]
// new tokens (0 to the tokens dimension; 0: it sits the step out), the first rows of its q, k and
// v (shapes as Attend); the rows beyond are padding and never read. One sequence can prefill while
// the others decode. out gets each sequence's attention in its first newTokens[b] rows and zeros
// beyond. Every layer of a step takes the same counts; policies, budgets and positions are per
// sequence. newTokens has one entry per sequence (batch_size).
func (s *Session) AttendRagged(layer int, q, k, v, out Tensor, newTokens []int64) error {
	tensors, release, err := describeAll([]string{"q", "k", "v", "out"}, []Tensor{q, k, v, out}, true)
	if err != nil {
		return err
	}
	defer release()
	return s.h.use("AttendRagged", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_attend_ragged(ptr, layer, tensors[0], tensors[1], tensors[2], tensors[3], newTokens))
	})
}

// ResetSequence retires sequence (a finished request): its pages go back to the pool, its policy
// state and positions restart; the other sequences are untouched. Its slot then takes a new
// sequence through AttendRagged. Between steps only.
func (s *Session) ResetSequence(sequence int) error {
	return s.h.use("ResetSequence", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_reset_sequence(ptr, sequence))
	})
}

// Observe runs an observe-only call of layer: the queries q [batch, heads, tokens, head_dim] (RoPE
// applied at the positions after the sequence, NextPosition + t) attend to the layer's cache as it
// is, every query seeing every cached token, and feed the eviction policy's scores as an Attend
// call's queries would (a question, or KVzip's "repeat the context" prompt). Nothing is appended or
// evicted; out (q's shape, or nil) receives the attention over the cache. Observe passes run the
// layers in order from 0, between steps.
func (s *Session) Observe(layer int, q, out Tensor) error {
	tensors, release, err := describeAll([]string{"q", "out"}, []Tensor{q, out}, true)
	if err != nil {
		return err
	}
	defer release()
	return s.h.use("Observe", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_observe(ptr, layer, tensors[0], tensors[1]))
	})
}

// Stats returns the session's statistics.
func (s *Session) Stats() (*attnkitpb.SessionStats, error) {
	stats := &attnkitpb.SessionStats{}
	err := s.h.use("Stats", func(ptr uintptr) error {
		var bytes []byte
		if err := fromCapi(capi.Attnkit_session_stats(ptr, &bytes)); err != nil {
			return err
		}
		if err := proto.Unmarshal(bytes, stats); err != nil {
			return newError(Internal, "reading SessionStats: %v", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return stats, nil
}

// BytesHeld returns the bytes of KV pages in use (keys and values, every layer).
func (s *Session) BytesHeld() (int64, error) {
	held := []int64{0}
	err := s.h.use("BytesHeld", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_bytes_held(ptr, held))
	})
	return held[0], err
}

// Positions returns the original positions (0 = first prompt token) of the tokens cached for
// (layer, sequence, kvHead), in cache order.
func (s *Session) Positions(layer, sequence, kvHead int) ([]int64, error) {
	var positions []int64
	err := s.h.use("Positions", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_positions(ptr, layer, sequence, kvHead, &positions))
	})
	if err != nil {
		return nil, err
	}
	return positions, nil
}

// NextPosition returns the RoPE position of the next token of sequence.
func (s *Session) NextPosition(sequence int) (int64, error) {
	position := []int64{0}
	err := s.h.use("NextPosition", func(ptr uintptr) error {
		return fromCapi(capi.Attnkit_session_next_position(ptr, sequence, position))
	})
	return position[0], err
}

// Reset drops every cached token and policy state to start a new prompt.
func (s *Session) Reset() error {
	return s.h.use("Reset", func(ptr uintptr) error { return fromCapi(capi.Attnkit_session_reset(ptr)) })
}

// Save returns the session's whole state (config, pages, positions, counters, the eviction
// policies' scores) as one versioned, checksummed blob. A session created with the same config
// that loads it computes exactly what this one would have.
func (s *Session) Save() ([]byte, error) {
	var blob []byte
	err := s.h.use("Save", func(ptr uintptr) error { return fromCapi(capi.Attnkit_session_save(ptr, &blob)) })
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// Load replaces the session's state with a Save blob of a session with the same config. A
// truncated, altered or foreign blob is an InvalidArgument error and leaves the session as it was.
func (s *Session) Load(blob []byte) error {
	return s.h.use("Load", func(ptr uintptr) error { return fromCapi(capi.Attnkit_session_load(ptr, blob)) })
}

// Fork returns a new session with this one's config and state (pages shared copy-on-write on
// the CPU): one compressed context, several continuations. Close it like any session.
func (s *Session) Fork() (*Session, error) {
	var forked uintptr
	err := s.h.use("Fork", func(ptr uintptr) error { return fromCapi(capi.Attnkit_session_fork(ptr, &forked)) })
	if err != nil {
		return nil, err
	}
	return newSession(forked), nil
}
