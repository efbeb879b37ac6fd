"""attnkit.SparseAttention: block masks and the block-sparse prefill kernel (attnkit_sparse_attention)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from attnkit import _attnkit, _config, _tensors
from attnkit._handle import Handle
from attnkit._types import ConfigLike, TensorLike


class SparseAttention(Handle):
    """A sparse prefill policy (DENSE, A_SHAPE, TRI_SHAPE, XATTENTION, FLEXPREFILL) from an
    ``attnkit_pb2.SparseAttentionConfig``, its bytes, or textproto. Immutable after creation: several
    threads may use one object at once.

    q ``[batch, heads, q_len, head_dim]``, k/v ``[batch, kv_heads, k_len, head_dim]``; masks are
    uint8 ``[batch, mask_heads, q_blocks, k_blocks]``.
    """

    __slots__ = ()
    _native: _attnkit.SparseAttention

    def __init__(self, config: ConfigLike) -> None:
        self._native = _attnkit.SparseAttention(
            _config.to_wire(config, "attnkit.v1.SparseAttentionConfig"))

    def mask_shape(self, num_heads: int, q_len: int, k_len: int) -> Tuple[int, int, int]:
        """``(mask_heads, q_blocks, k_blocks)`` of the mask for these sizes."""
        return self._native.mask_shape(num_heads, q_len, k_len)

    def build_mask(self, q: TensorLike, k: TensorLike,
                   out: Optional[TensorLike] = None) -> TensorLike:
        """The block mask of every sequence, written into ``out`` (or a new uint8 numpy array)."""
        if out is None:
            q_shape, k_shape = _tensors.shape_of(q, "q"), _tensors.shape_of(k, "k")
            heads, q_blocks, k_blocks = self.mask_shape(q_shape[1], q_shape[2], k_shape[2])
            out = np.empty((q_shape[0], heads, q_blocks, k_blocks), dtype=np.uint8)
        self._native.build_mask(q, k, out)
        return out

    def attention(self, q: TensorLike, k: TensorLike, v: TensorLike, mask: TensorLike,
                  scale: float = 0.0, out: Optional[TensorLike] = None) -> TensorLike:
        """Block-sparse causal attention restricted to ``mask``; returns ``out``. ``scale`` 0 means
        1/sqrt(head_dim)."""
        if out is None:
            out = self._new_output(q, v)
        self._native.attention(q, k, v, mask, float(scale), out)
        return out

    def prefill(self, q: TensorLike, k: TensorLike, v: TensorLike, scale: float = 0.0,
                out: Optional[TensorLike] = None) -> Tuple[TensorLike, float]:
        """build_mask + attention in one call. Returns ``(out, density)``, density being the share of
        block-causal blocks computed (1.0 when dense)."""
        if out is None:
            out = self._new_output(q, v)
        density = self._native.prefill(q, k, v, float(scale), out)
        return out, density

    @staticmethod
    def _new_output(q: TensorLike, v: TensorLike) -> TensorLike:
        q_shape, v_shape = _tensors.shape_of(q, "q"), _tensors.shape_of(v, "v")
        return _tensors.float_output(q_shape[:3] + v_shape[3:], q)
