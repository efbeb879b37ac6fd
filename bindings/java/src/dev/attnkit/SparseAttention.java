package dev.attnkit;

import dev.attnkit.internal.AttnKitNative;
import dev.attnkit.proto.SparseAttentionConfig;

/**
 * Sparse prefill attention: block masks (dense, A-shape, Tri-shape, XAttention) and the
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

  public static SparseAttention create(SparseAttentionConfig config) {
    return create(config.toByteArray());
  }

  /** From a serialized attnkit.v1.SparseAttentionConfig (empty: all defaults). */
  public static SparseAttention create(byte[] config) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_sparse_attention_create(config, created);
    return new SparseAttention(created[0]);
  }

  public static SparseAttention fromText(String text) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_sparse_attention_create_from_text(text, created);
    return new SparseAttention(created[0]);
  }

  /** The mask shape {mask_heads, q_blocks, k_blocks} for {@code numHeads} heads, qLen queries, kLen keys. */
  public long[] maskShape(long numHeads, long qLen, long kLen) {
    long[] heads = new long[1];
    long[] qBlocks = new long[1];
    long[] kBlocks = new long[1];
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_mask_shape(p, numHeads, qLen, kLen, heads, qBlocks, kBlocks));
    return new long[] {heads[0], qBlocks[0], kBlocks[0]};
  }

  /** Writes the block mask (0/1) of every sequence into {@code maskOut} (uint8). */
  public void buildMask(Tensor q, Tensor k, Tensor maskOut) {
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_build_mask(p, q, k, maskOut));
  }

  /** Block-sparse causal attention restricted to {@code mask}; {@code scale} 0 means 1/sqrt(head_dim). */
  public void attention(Tensor q, Tensor k, Tensor v, Tensor mask, double scale, Tensor out) {
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_attention(p, q, k, v, mask, scale, out));
  }

  /** Mask and attention in one call; returns the share of block-causal blocks computed. */
  public double prefill(Tensor q, Tensor k, Tensor v, double scale, Tensor out) {
    double[] density = new double[1];
    handle.run(p -> AttnKitNative.attnkit_sparse_attention_prefill(p, q, k, v, scale, out, density));
    return density[0];
  }

  public boolean isClosed() {
    return handle.isClosed();
  }

  @Override
  public void close() {
    handle.close();
  }
}
