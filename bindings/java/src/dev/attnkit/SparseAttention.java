package dev.attnkit;

import dev.attnkit.internal.AttnKitNative;
import dev.attnkit.proto.SparseAttentionConfig;

/**
 * Sparse prefill attention: block masks (dense, A-shape, Tri-shape, XAttention, FlexPrefill) and the
 * block-sparse attention kernel. q [batch, heads, q_len, head_dim], k and v [batch, kv_heads,
 * k_len, head_dim], masks uint8 [batch, mask_heads, q_blocks, k_blocks] (see {@link #maskShape}).
 *
 * <p>Immutable once created: may be used by several threads at once. Close when done.
 */
public final class SparseAttention implements AutoCloseable {
  private final NativeHandle handle;

  private SparseAttention(long pointer) {
    handle = NativeHandle.own(this, "SparseAttention", pointer, AttnKitNative::attnkit_sparse_attention_free);
  }

  /**
   * Sparse attention from a typed configuration.
   *
   * @param config the sparse attention configuration
   * @return the new object, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for an invalid configuration
   */
  public static SparseAttention create(SparseAttentionConfig config) {
    return create(config.toByteArray());
  }

  /**
   * Sparse attention from a serialized attnkit.v1.SparseAttentionConfig.
   *
   * @param config a serialized attnkit.v1.SparseAttentionConfig (empty: all defaults)
   * @return the new object, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for bytes that do not parse or an invalid
   *     configuration
   */
  public static SparseAttention create(byte[] config) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_sparse_attention_create(config, created);
    return new SparseAttention(created[0]);
  }

  /**
   * Sparse attention from an attnkit.v1.SparseAttentionConfig in textproto.
   *
   * @param text an attnkit.v1.SparseAttentionConfig in textproto
   * @return the new object, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for text that does not parse or an invalid
   *     configuration
   */
  public static SparseAttention fromText(String text) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_sparse_attention_create_from_text(text, created);
    return new SparseAttention(created[0]);
  }

  /**
   * The block mask's shape for a prefill, without its batch dimension.
   *
   * @param numHeads the query heads
   * @param qLen the queries per sequence
   * @param kLen the keys per sequence
   * @return {mask_heads, q_blocks, k_blocks}
   * @throws AttnKitException INVALID_ARGUMENT for an invalid size
   * @throws IllegalStateException after {@link #close()}
   */
  public long[] maskShape(long numHeads, long qLen, long kLen) {
    long[] heads = new long[1];
    long[] qBlocks = new long[1];
    long[] kBlocks = new long[1];
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_mask_shape(p, numHeads, qLen, kLen, heads, qBlocks, kBlocks));
    return new long[] {heads[0], qBlocks[0], kBlocks[0]};
  }

  /**
   * Writes the block mask (0/1) of every sequence into {@code maskOut}.
   *
   * @param q the queries [batch, heads, q_len, head_dim]
   * @param k the keys [batch, kv_heads, k_len, head_dim]
   * @param maskOut receives the mask, uint8 [batch, mask_heads, q_blocks, k_blocks]
   * @throws AttnKitException INVALID_ARGUMENT for a bad tensor
   * @throws IllegalStateException after {@link #close()}
   */
  public void buildMask(Tensor q, Tensor k, Tensor maskOut) {
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_build_mask(p, q, k, maskOut));
  }

  /**
   * Block-sparse causal attention restricted to {@code mask}.
   *
   * @param q the queries [batch, heads, q_len, head_dim]
   * @param k the keys [batch, kv_heads, k_len, head_dim]
   * @param v the values [batch, kv_heads, k_len, head_dim]
   * @param mask the block mask, uint8 [batch, mask_heads, q_blocks, k_blocks]
   * @param scale the softmax scale; 0 means 1/sqrt(head_dim)
   * @param out receives the attention output, q's shape
   * @throws AttnKitException INVALID_ARGUMENT for a bad tensor or scale
   * @throws IllegalStateException after {@link #close()}
   */
  public void attention(Tensor q, Tensor k, Tensor v, Tensor mask, double scale, Tensor out) {
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_attention(p, q, k, v, mask, scale, out));
  }

  /**
   * Mask and attention in one call.
   *
   * @param q the queries [batch, heads, q_len, head_dim]
   * @param k the keys [batch, kv_heads, k_len, head_dim]
   * @param v the values [batch, kv_heads, k_len, head_dim]
   * @param scale the softmax scale; 0 means 1/sqrt(head_dim)
   * @param out receives the attention output, q's shape
   * @return the share of block-causal blocks computed, from 0 to 1
   * @throws AttnKitException INVALID_ARGUMENT for a bad tensor or scale
   * @throws IllegalStateException after {@link #close()}
   */
  public double prefill(Tensor q, Tensor k, Tensor v, double scale, Tensor out) {
    double[] density = new double[1];
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_prefill(p, q, k, v, scale, out, density));
    return density[0];
  }

  /**
   * Whether {@link #close()} was called.
   *
   * @return true once the object is closed
   */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /** Frees the object; a second close does nothing. */
  @Override
  public void close() {
    handle.close();
  }
}
