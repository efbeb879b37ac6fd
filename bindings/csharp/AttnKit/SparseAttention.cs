using System;
using AttnKit.Native;
using AttnKit.Proto;
using Google.Protobuf;

namespace AttnKit
{
    /// <summary>
    /// Sparse prefill attention (attnkit_sparse_attention): block masks (A-shape, Tri-shape, XAttention,
    /// FlexPrefill) and the block-sparse causal attention kernel. Immutable; may be used by several
    /// threads at once.
    /// </summary>
    public sealed class SparseAttention : IDisposable
    {
        private readonly NativeHandle _handle;

        /// <summary>From a serialized attnkit.v1.SparseAttentionConfig (empty: all defaults).</summary>
        public SparseAttention(ReadOnlySpan<byte> config)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_sparse_attention_create(config, out IntPtr sparse);
            _handle = Own(sparse);
        }

        /// <summary>From a generated SparseAttentionConfig message.</summary>
        public SparseAttention(SparseAttentionConfig config)
            : this((config ?? throw new ArgumentNullException(nameof(config))).ToByteArray())
        {
        }

        private SparseAttention(IntPtr sparse) => _handle = Own(sparse);

        /// <summary>From a SparseAttentionConfig in textproto.</summary>
        public static SparseAttention FromText(string textproto)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_sparse_attention_create_from_text(textproto, out IntPtr sparse);
            return new SparseAttention(sparse);
        }

        /// <summary>The [batch, MaskHeads, QBlocks, KBlocks] shape BuildMask writes (per sequence).</summary>
        public (long MaskHeads, long QBlocks, long KBlocks) MaskShape(long numHeads, long qLen, long kLen)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_sparse_attention_mask_shape(lease.Pointer, numHeads, qLen, kLen,
                                                              out long maskHeads, out long qBlocks, out long kBlocks);
            return (maskHeads, qBlocks, kBlocks);
        }

        /// <summary>Builds the block mask (uint8, 0/1) of q [batch, heads, q_len, d] and k into <paramref name="maskOut"/>.</summary>
        public void BuildMask(TensorView q, TensorView k, TensorView maskOut)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_sparse_attention_build_mask(lease.Pointer, q, k, maskOut);
        }

        /// <summary>Block-sparse causal attention restricted to <paramref name="mask"/>; scale 0 = 1/sqrt(d).</summary>
        public void Attention(TensorView q, TensorView k, TensorView v, TensorView mask, double scale, TensorView output)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_sparse_attention_attention(lease.Pointer, q, k, v, mask, scale, output);
        }

        /// <summary>BuildMask + Attention in one call; returns the share of block-causal blocks computed.</summary>
        public double Prefill(TensorView q, TensorView k, TensorView v, double scale, TensorView output)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_sparse_attention_prefill(lease.Pointer, q, k, v, scale, output, out double density);
            return density;
        }

        /// <summary>Frees the native object; later calls throw ObjectDisposedException.</summary>
        public void Dispose() => _handle.Dispose();

        private static NativeHandle Own(IntPtr sparse) =>
            new(sparse, static pointer => AttnKitNative.attnkit_sparse_attention_free(pointer));
    }
}
