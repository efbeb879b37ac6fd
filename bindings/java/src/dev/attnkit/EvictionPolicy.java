package dev.attnkit;

import dev.attnkit.internal.AttnKitNative;
import dev.attnkit.proto.EvictionConfig;

/**
 * KV cache eviction for hosts that keep their own cache and kernels. Per step and layer: append the
 * new keys/values, compute attention, {@link #observe} the attention weights, then {@link #select}
 * the cache positions to keep (all of them while the layer is within budget) and keep exactly
 * those, in that order.
 *
 * <p>Not thread-safe: one thread at a time. Close when done; use after close throws
 * IllegalStateException.
 */
public final class EvictionPolicy implements AutoCloseable {
  private final NativeHandle handle;

  private EvictionPolicy(long pointer) {
    handle = NativeHandle.own(this, "EvictionPolicy", pointer, AttnKitNative::attnkit_eviction_policy_free);
  }

  /** A policy for a model of {@code numLayers} layers, {@code numHeads} query and {@code numKvHeads} kv heads. */
  public static EvictionPolicy create(EvictionConfig config, int numLayers, int numHeads, int numKvHeads) {
    return create(config.toByteArray(), numLayers, numHeads, numKvHeads);
  }

  /** As {@link #create(EvictionConfig, int, int, int)} from a serialized attnkit.v1.EvictionConfig. */
  public static EvictionPolicy create(byte[] config, int numLayers, int numHeads, int numKvHeads) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_eviction_policy_create(config, numLayers, numHeads, numKvHeads, created);
    return new EvictionPolicy(created[0]);
  }

  /** As {@link #create(EvictionConfig, int, int, int)} from textproto. */
  public static EvictionPolicy fromText(String text, int numLayers, int numHeads, int numKvHeads) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_eviction_policy_create_from_text(text, numLayers, numHeads, numKvHeads, created);
    return new EvictionPolicy(created[0]);
  }

  /** Adds one step's attention weights [batch, heads, queries, cache_tokens] of {@code layer}. */
  public void observe(int layer, Tensor attention) {
    observe(layer, attention, null);
  }

  /** As {@link #observe(int, Tensor)} with per-kv-head cache lengths (per-head policies), or null. */
  public void observe(int layer, Tensor attention, long[] lengths) {
    handle.run(p -> AttnKitNative.attnkit_eviction_policy_observe(p, layer, attention, lengths));
  }

  /**
   * The cache positions {@code layer} keeps: one row, or one per kv head for per-head policies,
   * ascending. {@code keys} [kv_heads, cache_tokens, head_dim] is needed when {@link #needsKeys()},
   * else may be null; {@code lengths} is the cache length or one per kv head.
   */
  public long[][] select(int layer, Tensor keys, long... lengths) {
    long[] kept = new long[1];
    handle.run(p -> AttnKitNative.attnkit_eviction_policy_select(p, layer, keys, lengths, kept));
    try {
      long rows = AttnKitNative.attnkit_kept_positions_num_rows(kept[0]);
      long[][] positions = new long[(int) rows][];
      long[] size = new long[1];
      for (int row = 0; row < rows; ++row) {
        long address = AttnKitNative.attnkit_kept_positions_row(kept[0], row, size);
        positions[row] = AttnKitNative.attnkit_java_copy_int64s(address, size[0]);
      }
      return positions;
    } finally {
      AttnKitNative.attnkit_kept_positions_free(kept[0]);
    }
  }

  /** True when {@link #select} needs the keys (DIVERSEKV, KNORM, KEYDIFF). */
  public boolean needsKeys() {
    return handle.call(AttnKitNative::attnkit_eviction_policy_needs_keys) != 0;
  }

  /** True when every kv head keeps its own tokens. */
  public boolean perHead() {
    return handle.call(AttnKitNative::attnkit_eviction_policy_per_head) != 0;
  }

  /** The tokens {@code layer} may hold per kv head after an eviction. */
  public long layerBudget(int layer) {
    long[] budget = new long[1];
    handle.run(p -> AttnKitNative.attnkit_eviction_policy_layer_budget(p, layer, budget));
    return budget[0];
  }

  /** Forgets every layer's scores (a new prompt). */
  public void reset() {
    handle.run(AttnKitNative::attnkit_eviction_policy_reset);
  }

  public boolean isClosed() {
    return handle.isClosed();
  }

  @Override
  public void close() {
    handle.close();
  }
}
