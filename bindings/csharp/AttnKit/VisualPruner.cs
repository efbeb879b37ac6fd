using System;
using AttnKit.Native;
using AttnKit.Proto;
using Google.Protobuf;

namespace AttnKit
{
    /// <summary>
    /// Visual token pruning (attnkit_visual_pruner: CDPruner, DivPrune, random and uniform baselines):
    /// selects the image tokens of a VLM prompt to keep. Immutable; may be used by several threads.
    /// </summary>
    public sealed class VisualPruner : IDisposable
    {
        private readonly NativeHandle _handle;

        /// <summary>From a serialized attnkit.v1.VisualPruningConfig.</summary>
        public VisualPruner(ReadOnlySpan<byte> config)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_visual_pruner_create(config, out IntPtr pruner);
            _handle = Own(pruner);
        }

        /// <summary>From a generated VisualPruningConfig message.</summary>
        public VisualPruner(VisualPruningConfig config)
            : this((config ?? throw new ArgumentNullException(nameof(config))).ToByteArray())
        {
        }

        private VisualPruner(IntPtr pruner) => _handle = Own(pruner);

        /// <summary>From a VisualPruningConfig in textproto.</summary>
        public static VisualPruner FromText(string textproto)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_visual_pruner_create_from_text(textproto, out IntPtr pruner);
            return new VisualPruner(pruner);
        }

        /// <summary>
        /// Selects for images of equal size: image_embeds [N, C] or [images, N, C], image_features
        /// [N, Dv] or [images, N, Dv], text_embeds [M, C] (the embeds may be Null for methods other than
        /// CDPruner).
        /// </summary>
        public VisualSelection Select(TensorView imageEmbeds, TensorView imageFeatures, TensorView textEmbeds)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_visual_pruner_select(lease.Pointer, imageEmbeds, imageFeatures, textEmbeds,
                                                       out IntPtr selection);
            return new VisualSelection(selection);
        }

        /// <summary>Selects for images of different sizes, their rows concatenated.</summary>
        public VisualSelection SelectRagged(TensorView imageEmbeds, TensorView imageFeatures,
                                           ReadOnlySpan<long> imageSizes, TensorView textEmbeds)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_visual_pruner_select_ragged(lease.Pointer, imageEmbeds, imageFeatures, imageSizes,
                                                              textEmbeds, out IntPtr selection);
            return new VisualSelection(selection);
        }

        /// <summary>Frees the native object; later calls throw ObjectDisposedException.</summary>
        public void Dispose() => _handle.Dispose();

        private static NativeHandle Own(IntPtr pruner) =>
            new(pruner, static pointer => AttnKitNative.attnkit_visual_pruner_free(pointer));
    }

    /// <summary>The kept image tokens of one select call (attnkit_visual_selection).</summary>
    public sealed class VisualSelection : IDisposable
    {
        private readonly NativeHandle _handle;

        internal VisualSelection(IntPtr selection) =>
            _handle = new NativeHandle(selection, static pointer => AttnKitNative.attnkit_visual_selection_free(pointer));

        /// <summary>The number of images the selection covers.</summary>
        public int NumImages
        {
            get
            {
                using var lease = _handle.Acquire(this);
                return checked((int)AttnKitNative.attnkit_visual_selection_num_images(lease.Pointer));
            }
        }

        /// <summary>Tokens of image <paramref name="image"/> before pruning.</summary>
        public long ImageSize(int image)
        {
            using var lease = _handle.Acquire(this);
            return checked((long)AttnKitNative.attnkit_visual_selection_image_size(lease.Pointer, (ulong)image));
        }

        /// <summary>Kept token indices of image <paramref name="image"/>, local to it and ascending.</summary>
        public long[] Indices(int image)
        {
            using var lease = _handle.Acquire(this);
            ulong count = AttnKitNative.attnkit_visual_selection_num_kept(lease.Pointer, (ulong)image);
            return NativeBuffers.CopyInt64s(AttnKitNative.attnkit_visual_selection_indices(lease.Pointer, (ulong)image),
                                            count);
        }

        /// <summary>Kept tokens of all images as indices into the concatenated image tokens.</summary>
        public long[] FlatIndices()
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_visual_selection_flat_indices(lease.Pointer, out long[] indices);
            return indices;
        }

        /// <summary>Positions to keep in a full prompt whose image tokens are marked nonzero in the mask.</summary>
        public long[] KeptPositions(ReadOnlySpan<byte> imageTokenMask)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_visual_selection_kept_positions(lease.Pointer, imageTokenMask, out long[] positions);
            return positions;
        }

        /// <summary>Frees the native object; later calls throw ObjectDisposedException.</summary>
        public void Dispose() => _handle.Dispose();
    }
}
