"""attnkit.Session: the attention-wrapping session (attnkit_session)."""

from __future__ import annotations

from typing import Optional, Sequence

from attnkit import _attnkit, _config, _tensors
from attnkit._types import ConfigLike, Int64Array, TensorLike
from attnkit._handle import Handle
from attnkit.v1 import session_pb2


class Session(Handle):
    """A session for one batch of sequences: owns the KV cache of every layer in pages, computes
    attention and applies the eviction policy.

    ``config`` is an ``attnkit_pb2.SessionConfig``, a dict in the proto3 JSON mapping (as
    ``json.load`` gives), its serialized bytes, or textproto (str).
    Invalid configs raise ``attnkit.InvalidArgument`` naming the field. One thread at a time uses a
    session (calls from other threads wait); the GIL is released while the library works.
    """

    __slots__ = ()
    _native: _attnkit.Session

    def __init__(self, config: ConfigLike) -> None:
        self._native = _attnkit.Session(_config.to_wire(config, "attnkit.v1.SessionConfig"))

    def attend(self, layer: int, q: TensorLike, k: TensorLike, v: TensorLike,
               out: Optional[TensorLike] = None) -> TensorLike:
        """One attention call of ``layer`` (layers in order within a step).

        q ``[batch, num_heads, tokens, head_dim]``, k and v ``[batch, num_kv_heads, tokens,
        head_dim]`` (RoPE applied): any objects with ``__dlpack__`` (numpy, torch) or the buffer
        protocol, float32/float16/bfloat16, any strides, borrowed without copies. Returns ``out``
        (shape of q): the given writable tensor, or a new float32 numpy array.
        """
        if out is None:
            out = _tensors.float_output(_tensors.shape_of(q, "q"), q)
        self._native.attend(layer, q, k, v, out)
        return out

    def attend_ragged(self, layer: int, q: TensorLike, k: TensorLike, v: TensorLike,
                      new_tokens: Sequence[int],
                      out: Optional[TensorLike] = None) -> TensorLike:
        """A ragged call of ``layer`` (continuous batching): sequence b brings ``new_tokens[b]``
        new tokens (0 to the tokens dimension; 0: it sits the step out), the first rows of its q,
        k, v (shapes as :meth:`attend`); the rows beyond are padding and never read. One sequence
        can prefill while the others decode. Returns ``out`` with each sequence's attention in its
        first ``new_tokens[b]`` rows and zeros beyond. Every layer of a step takes the same counts;
        policies, budgets and positions are per sequence."""
        if out is None:
            out = _tensors.float_output(_tensors.shape_of(q, "q"), q)
        self._native.attend_ragged(layer, q, k, v, out, list(new_tokens))
        return out

    def reset_sequence(self, sequence: int) -> None:
        """Retires ``sequence`` (a finished request): its pages go back to the pool, its policy
        state and positions restart; the other sequences are untouched. Its slot then takes a new
        sequence through :meth:`attend_ragged`. Between steps only."""
        self._native.reset_sequence(sequence)

    def observe(self, layer: int, q: TensorLike,
                out: Optional[TensorLike] = None) -> Optional[TensorLike]:
        """An observe-only call of ``layer``: the queries q ``[batch, num_heads, tokens,
        head_dim]`` (RoPE applied at the positions after the sequence, :meth:`next_position` + t)
        attend to the layer's cache as it is, every query seeing every cached token, and feed the
        eviction policy's scores as an :meth:`attend` call's queries would (a question, or KVzip's
        "repeat the context" prompt). Nothing is appended or evicted. ``out`` (q's shape, writable)
        receives the attention over the cache and is returned; without it nothing is written and
        None is returned. Observe passes run the layers in order from 0, between steps.
        """
        self._native.observe(layer, q, out)
        return out

    def stats(self) -> session_pb2.SessionStats:
        """The statistics as an ``attnkit_pb2.SessionStats``."""
        stats = session_pb2.SessionStats()
        stats.ParseFromString(self._native.stats())
        return stats

    @property
    def bytes_held(self) -> int:
        """Bytes of KV pages in use (keys and values, every layer)."""
        return self._native.bytes_held()

    def positions(self, layer: int, sequence: int = 0, kv_head: int = 0) -> Int64Array:
        """Original positions (0 = first prompt token) cached for (layer, sequence, kv_head), in
        cache order, as an int64 numpy array."""
        return _tensors.int64_array(self._native.positions(layer, sequence, kv_head))

    def next_position(self, sequence: int = 0) -> int:
        """The RoPE position the next token of ``sequence`` takes."""
        return self._native.next_position(sequence)

    def reset(self) -> None:
        """Drops every cached token and policy state (a new prompt)."""
        self._native.reset()

    def save(self) -> bytes:
        """The session's whole state (config, pages, positions, counters, the eviction policies'
        scores) as one versioned, checksummed blob. A session created with the same config that
        :meth:`load` s it computes exactly what this one would have."""
        return self._native.save()

    def load(self, blob: bytes) -> None:
        """Replaces the state with a :meth:`save` blob (bytes-like) of a session with the same
        config. A truncated, altered or foreign blob raises ``attnkit.InvalidArgument`` and leaves
        the session as it was."""
        self._native.load(blob)

    def fork(self) -> "Session":
        """A new session with this one's config and state (pages shared copy-on-write on the
        CPU): one compressed context, several continuations."""
        fork = Session.__new__(Session)
        fork._native = self._native.fork()
        return fork
