"""attnkit.EvictionPolicy: KV eviction for hosts that keep their own cache (attnkit_eviction_policy)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

from attnkit import _attnkit, _config, _tensors
from attnkit._handle import Handle
from attnkit._types import ConfigLike, Int64Array, TensorLike


class EvictionPolicy(Handle):
    """Per step and layer: append the new keys/values to your cache, compute attention, pass the
    attention weights to :meth:`observe`, then :meth:`select` says which cache positions to keep.

    ``config`` is an ``attnkit_pb2.EvictionConfig``, its bytes, or textproto. One thread at a time.
    """

    __slots__ = ()
    _native: _attnkit.EvictionPolicy

    def __init__(self, config: ConfigLike, num_layers: int, num_heads: int,
                 num_kv_heads: int) -> None:
        self._native = _attnkit.EvictionPolicy(
            _config.to_wire(config, "attnkit.v1.EvictionConfig"), num_layers, num_heads,
            num_kv_heads)

    def observe(self, layer: int, attention: TensorLike,
                lengths: Optional[Sequence[int]] = None) -> None:
        """Adds one step's softmax weights ``[batch, num_heads, queries, cache_tokens]`` of
        ``layer``. ``lengths``: per-kv-head cache lengths for per-head policies, else None."""
        self._native.observe(layer, attention, None if lengths is None else list(lengths))

    def select(self, layer: int, lengths: Union[int, Sequence[int]],
               keys: Optional[TensorLike] = None) -> List[Int64Array]:
        """The positions ``layer`` keeps: a list of ascending int64 numpy arrays, one row for
        layer-wide policies or one per kv head. ``lengths``: the cache length (an int) or one per kv
        head. ``keys`` ``[num_kv_heads, cache_tokens, head_dim]`` when :attr:`needs_keys`."""
        if isinstance(lengths, int):
            lengths = [lengths]
        rows = self._native.select(layer, keys, list(lengths))
        return [_tensors.int64_array(row) for row in rows]

    @property
    def needs_keys(self) -> bool:
        """True when select() needs the keys (DIVERSEKV, KNORM, KEYDIFF)."""
        return self._native.needs_keys()

    @property
    def per_head(self) -> bool:
        """True when every kv head keeps its own tokens."""
        return self._native.per_head()

    def layer_budget(self, layer: int) -> int:
        """The tokens ``layer`` may hold per kv head after an eviction."""
        return self._native.layer_budget(layer)

    def reset(self) -> None:
        """Forgets every layer's scores (a new prompt)."""
        self._native.reset()
