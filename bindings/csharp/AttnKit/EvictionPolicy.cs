using System;
using AttnKit.Native;
using AttnKit.Proto;
using Google.Protobuf;

namespace AttnKit
{
    /// <summary>
    /// A KV cache eviction policy for hosts that keep their own cache and kernels
    /// (attnkit_eviction_policy): per step and layer, Observe the attention weights, then Select the
    /// cache positions to keep. One thread at a time.
    /// </summary>
    public sealed class EvictionPolicy : IDisposable
    {
        private readonly NativeHandle _handle;

        /// <summary>From a serialized attnkit.v1.EvictionConfig for a model of the given shape.</summary>
        public EvictionPolicy(ReadOnlySpan<byte> config, int numLayers, int numHeads, int numKvHeads)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_eviction_policy_create(config, numLayers, numHeads, numKvHeads, out IntPtr policy);
            _handle = Own(policy);
        }

        /// <summary>From a generated EvictionConfig message, for a model of the given shape.</summary>
        public EvictionPolicy(EvictionConfig config, int numLayers, int numHeads, int numKvHeads)
            : this((config ?? throw new ArgumentNullException(nameof(config))).ToByteArray(), numLayers, numHeads,
                   numKvHeads)
        {
        }

        private EvictionPolicy(IntPtr policy) => _handle = Own(policy);

        /// <summary>From an EvictionConfig in textproto.</summary>
        public static EvictionPolicy FromText(string textproto, int numLayers, int numHeads, int numKvHeads)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_eviction_policy_create_from_text(textproto, numLayers, numHeads, numKvHeads,
                                                                   out IntPtr policy);
            return new EvictionPolicy(policy);
        }

        /// <summary>
        /// Adds one step's attention weights [batch, heads, queries, cache_tokens] of
        /// <paramref name="layer"/>; <paramref name="lengths"/> per kv head for per-head policies, else empty.
        /// </summary>
        public void Observe(int layer, TensorView attention, ReadOnlySpan<long> lengths = default)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_eviction_policy_observe(lease.Pointer, layer, attention, lengths);
        }

        /// <summary>
        /// The cache positions <paramref name="layer"/> keeps (ascending), one row, or one per kv head for
        /// per-head policies. <paramref name="keys"/> is needed when <see cref="NeedsKeys"/>, else may be
        /// <see cref="TensorView.Null"/>; <paramref name="lengths"/>: the cache length, or one per kv head.
        /// </summary>
        public long[][] Select(int layer, TensorView keys, ReadOnlySpan<long> lengths)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_eviction_policy_select(lease.Pointer, layer, keys, lengths, out IntPtr kept);
            try
            {
                var rows = new long[checked((int)AttnKitNative.attnkit_kept_positions_num_rows(kept))][];
                for (int row = 0; row < rows.Length; ++row)
                {
                    IntPtr data = AttnKitNative.attnkit_kept_positions_row(kept, (ulong)row, out ulong size);
                    rows[row] = NativeBuffers.CopyInt64s(data, size);
                }
                return rows;
            }
            finally
            {
                AttnKitNative.attnkit_kept_positions_free(kept);
            }
        }

        /// <summary>The cache positions to keep for a single length (layer-wide policies).</summary>
        public long[] Select(int layer, TensorView keys, long length) => Select(layer, keys, stackalloc[] { length })[0];

        /// <summary>True when Select needs the keys (DIVERSEKV, KNORM, KEYDIFF).</summary>
        public bool NeedsKeys
        {
            get
            {
                using var lease = _handle.Acquire(this);
                return AttnKitNative.attnkit_eviction_policy_needs_keys(lease.Pointer) != 0;
            }
        }

        /// <summary>True when every kv head keeps its own tokens.</summary>
        public bool PerHead
        {
            get
            {
                using var lease = _handle.Acquire(this);
                return AttnKitNative.attnkit_eviction_policy_per_head(lease.Pointer) != 0;
            }
        }

        /// <summary>Tokens <paramref name="layer"/> may hold per kv head after an eviction.</summary>
        public long LayerBudget(int layer)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_eviction_policy_layer_budget(lease.Pointer, layer, out long budget);
            return budget;
        }

        /// <summary>Forgets every layer's scores (a new prompt).</summary>
        public void Reset()
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_eviction_policy_reset(lease.Pointer);
        }

        /// <summary>Frees the native object; later calls throw ObjectDisposedException.</summary>
        public void Dispose() => _handle.Dispose();

        private static NativeHandle Own(IntPtr policy) =>
            new(policy, static pointer => AttnKitNative.attnkit_eviction_policy_free(pointer));
    }
}
