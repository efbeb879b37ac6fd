"""attnkit.EvictionPolicy: KV eviction for hosts that keep their own cache (attnkit_eviction_policy)."""

from attnkit import _attnkit, _config, _tensors
from attnkit._handle import Handle


class EvictionPolicy(Handle):
    """Per step and layer: append the new keys/values to your cache, compute attention, pass the
    attention weights to :meth:`observe`, then :meth:`select` says which cache positions to keep.

    ``config`` is an ``attnkit_pb2.EvictionConfig``, its bytes, or textproto. One thread at a time.
    """

    __slots__ = ()

    def __init__(self, config, num_layers, num_heads, num_kv_heads):
        self._native = _attnkit.EvictionPolicy(
            _config.to_wire(config, "attnkit.v1.EvictionConfig"), num_layers, num_heads,
            num_kv_heads)

    def observe(self, layer, attention, lengths=None):
        """Adds one step's softmax weights ``[batch, num_heads, queries, cache_tokens]`` of
        ``layer``. ``lengths``: per-kv-head cache lengths for per-head policies, else None."""
        self._native.observe(layer, attention, None if lengths is None else list(lengths))

    def select(self, layer, lengths, keys=None):
        """The positions ``layer`` keeps: a list of ascending int64 numpy arrays, one row for
        layer-wide policies or one per kv head. ``lengths``: the cache length (an int) or one per kv
        head. ``keys`` ``[num_kv_heads, cache_tokens, head_dim]`` when :attr:`needs_keys`."""
        if isinstance(lengths, int):
            lengths = [lengths]
        rows = self._native.select(layer, keys, list(lengths))
        return [_tensors.int64_array(row) for row in rows]

    @property
    def needs_keys(self):
        """True when select() needs the keys (DIVERSEKV, KNORM, KEYDIFF)."""
        return self._native.needs_keys()

    @property
    def per_head(self):
        """True when every kv head keeps its own tokens."""
        return self._native.per_head()

    def layer_budget(self, layer):
        """The tokens ``layer`` may hold per kv head after an eviction."""
        return self._native.layer_budget(layer)

    def reset(self):
        """Forgets every layer's scores (a new prompt)."""
        self._native.reset()
