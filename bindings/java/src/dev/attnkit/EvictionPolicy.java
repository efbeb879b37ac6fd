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

  /**
   * A policy for a model of {@code numLayers} layers, {@code numHeads} query and {@code numKvHeads}
   * kv heads.
   *
   * @param config the eviction configuration
   * @param numLayers the model's layers
   * @param numHeads the model's query heads
   * @param numKvHeads the model's kv heads
   * @return the new policy, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for an invalid configuration or model shape
   */
  public static EvictionPolicy create(EvictionConfig config, int numLayers, int numHeads, int numKvHeads) {
    return create(config.toByteArray(), numLayers, numHeads, numKvHeads);
  }

  /**
   * As {@link #create(EvictionConfig, int, int, int)} from a serialized attnkit.v1.EvictionConfig.
   *
   * @param config a serialized attnkit.v1.EvictionConfig
   * @param numLayers the model's layers
   * @param numHeads the model's query heads
   * @param numKvHeads the model's kv heads
   * @return the new policy, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for an invalid configuration or model shape
   */
  public static EvictionPolicy create(byte[] config, int numLayers, int numHeads, int numKvHeads) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_eviction_policy_create(config, numLayers, numHeads, numKvHeads, created);
    return new EvictionPolicy(created[0]);
  }

  /**
   * As {@link #create(EvictionConfig, int, int, int)} from textproto.
   *
   * @param text an attnkit.v1.EvictionConfig in textproto
   * @param numLayers the model's layers
   * @param numHeads the model's query heads
   * @param numKvHeads the model's kv heads
   * @return the new policy, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for an invalid configuration, text that does not parse or model shape
   */
  public static EvictionPolicy fromText(String text, int numLayers, int numHeads, int numKvHeads) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_eviction_policy_create_from_text(text, numLayers, numHeads, numKvHeads, created);
    return new EvictionPolicy(created[0]);
  }

  /**
   * Adds one step's attention weights of {@code layer}.
   *
   * @param layer the layer, from 0
   * @param attention the attention weights [batch, heads, queries, cache_tokens]
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer or tensor
   * @throws IllegalStateException after {@link #close()}
   */
  public void observe(int layer, Tensor attention) {
    observe(layer, attention, null);
  }

  /**
   * As {@link #observe(int, Tensor)} with per-kv-head cache lengths (per-head policies).
   *
   * @param layer the layer, from 0
   * @param attention the attention weights [batch, heads, queries, cache_tokens]
   * @param lengths the cache length of each kv head, or null when all are cache_tokens
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer, tensor or lengths
   * @throws IllegalStateException after {@link #close()}
   */
  public void observe(int layer, Tensor attention, long[] lengths) {
    handle.run(p -> AttnKitNative.attnkit_eviction_policy_observe(p, layer, attention, lengths));
  }

  /**
   * The cache positions {@code layer} keeps: one row, or one per kv head for per-head policies,
   * ascending. {@code keys} [kv_heads, cache_tokens, head_dim] is needed when {@link #needsKeys()},
   * else may be null; {@code lengths} is the cache length or one per kv head.
   *
   * @param layer the layer, from 0
   * @param keys the cached keys [kv_heads, cache_tokens, head_dim], or null unless {@link
   *     #needsKeys()}
   * @param lengths the cache length, or one per kv head
   * @return the kept positions: one ascending row, or one per kv head
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer, tensor or lengths
   * @throws IllegalStateException after {@link #close()}
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

  /**
   * Whether {@link #select} reads the keys.
   *
   * @return true when {@link #select} needs the keys (DIVERSEKV, KNORM, KEYDIFF)
   * @throws IllegalStateException after {@link #close()}
   */
  public boolean needsKeys() {
    return handle.call(AttnKitNative::attnkit_eviction_policy_needs_keys) != 0;
  }

  /**
   * Whether the policy evicts per kv head.
   *
   * @return true when every kv head keeps its own tokens
   * @throws IllegalStateException after {@link #close()}
   */
  public boolean perHead() {
    return handle.call(AttnKitNative::attnkit_eviction_policy_per_head) != 0;
  }

  /**
   * The budget of a layer.
   *
   * @param layer the layer, from 0
   * @return the tokens {@code layer} may hold per kv head after an eviction
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer
   * @throws IllegalStateException after {@link #close()}
   */
  public long layerBudget(int layer) {
    long[] budget = new long[1];
    handle.run(p -> AttnKitNative.attnkit_eviction_policy_layer_budget(p, layer, budget));
    return budget[0];
  }

  /**
   * Forgets every layer's scores (a new prompt).
   *
   * @throws IllegalStateException after {@link #close()}
   */
  public void reset() {
    handle.run(AttnKitNative::attnkit_eviction_policy_reset);
  }

  /**
   * Whether {@link #close()} was called.
   *
   * @return true once the policy is closed
   */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /** Frees the policy; a second close does nothing. */
  @Override
  public void close() {
    handle.close();
  }
}
