using System;
using AttnKit.Native;
using AttnKit.Proto;
using Google.Protobuf;

namespace AttnKit
{
    /// <summary>
    /// The attention-wrapping session (attnkit_session): owns the KV cache of every layer in pages,
    /// computes attention for each layer's call and applies the eviction policy, so the bytes held
    /// follow the budget. One thread at a time.
    /// </summary>
    public sealed class Session : IDisposable
    {
        private readonly NativeHandle _handle;

        /// <summary>From a serialized attnkit.v1.SessionConfig.</summary>
        public Session(ReadOnlySpan<byte> config)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_session_create(config, out IntPtr session);
            _handle = Own(session);
        }

        /// <summary>From a generated SessionConfig message.</summary>
        public Session(SessionConfig config)
            : this((config ?? throw new ArgumentNullException(nameof(config))).ToByteArray())
        {
        }

        private Session(IntPtr session) => _handle = Own(session);

        /// <summary>From a SessionConfig in textproto.</summary>
        public static Session FromText(string textproto)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_session_create_from_text(textproto, out IntPtr session);
            return new Session(session);
        }

        /// <summary>
        /// One attention call of <paramref name="layer"/> (layers in order within a step):
        /// q [batch, heads, tokens, head_dim], k and v [batch, kv_heads, tokens, head_dim] for the new
        /// tokens (RoPE applied); writes the attention output into <paramref name="output"/> (q's shape).
        /// </summary>
        public void Attend(int layer, TensorView q, TensorView k, TensorView v, TensorView output)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_attend(lease.Pointer, layer, q, k, v, output);
        }

        /// <summary>
        /// A ragged call of <paramref name="layer"/> (continuous batching): sequence b brings
        /// <paramref name="newTokens"/>[b] new tokens (0 to the tokens dimension; 0: it sits the step out), the
        /// first rows of its q, k and v (shapes as <see cref="Attend"/>); the rows beyond are padding and never
        /// read. One sequence can prefill while the others decode. <paramref name="output"/> gets each
        /// sequence's attention in its first newTokens[b] rows and zeros beyond. Every layer of a step takes the
        /// same counts; policies, budgets and positions are per sequence.
        /// </summary>
        public void AttendRagged(int layer, TensorView q, TensorView k, TensorView v, TensorView output,
                                 ReadOnlySpan<long> newTokens)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_attend_ragged(lease.Pointer, layer, q, k, v, output, newTokens);
        }

        /// <summary>
        /// Retires <paramref name="sequence"/> (a finished request): its pages go back to the pool, its policy
        /// state and positions restart; the other sequences are untouched. Its slot then takes a new sequence
        /// through <see cref="AttendRagged"/>. Between steps only.
        /// </summary>
        public void ResetSequence(int sequence)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_reset_sequence(lease.Pointer, sequence);
        }

        /// <summary>
        /// An observe-only call of <paramref name="layer"/>: the queries q [batch, heads, tokens, head_dim]
        /// (RoPE applied at the positions after the sequence, <see cref="NextPosition"/> + t) attend to the
        /// layer's cache as it is, every query seeing every cached token, and feed the eviction policy's
        /// scores as an <see cref="Attend"/> call's queries would (a question, or KVzip's "repeat the context"
        /// prompt). Nothing is appended or evicted; <paramref name="output"/> (q's shape) receives the
        /// attention over the cache. Observe passes run the layers in order from 0, between steps.
        /// </summary>
        public void Observe(int layer, TensorView q, TensorView output)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_observe(lease.Pointer, layer, q, output);
        }

        /// <summary>As <see cref="Observe(int, TensorView, TensorView)"/> without an output.</summary>
        public void Observe(int layer, TensorView q) => Observe(layer, q, TensorView.Null);

        /// <summary>Statistics as a serialized attnkit.v1.SessionStats.</summary>
        public byte[] StatsBytes()
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_stats(lease.Pointer, out byte[] stats);
            return stats;
        }

        /// <summary>Statistics as the generated SessionStats message.</summary>
        public SessionStats Stats() => SessionStats.Parser.ParseFrom(StatsBytes());

        /// <summary>Bytes of KV pages in use (keys and values, every layer).</summary>
        public long BytesHeld
        {
            get
            {
                using var lease = _handle.Acquire(this);
                AttnKitNative.attnkit_session_bytes_held(lease.Pointer, out long bytes);
                return bytes;
            }
        }

        /// <summary>Original positions of the tokens cached for (layer, sequence, kv head), in cache order.</summary>
        public long[] Positions(int layer, int sequence = 0, int kvHead = 0)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_positions(lease.Pointer, layer, sequence, kvHead, out long[] positions);
            return positions;
        }

        /// <summary>The RoPE position to give the next token of <paramref name="sequence"/>.</summary>
        public long NextPosition(int sequence = 0)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_next_position(lease.Pointer, sequence, out long position);
            return position;
        }

        /// <summary>Drops every cached token and policy state to start a new prompt.</summary>
        public void Reset()
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_reset(lease.Pointer);
        }

        /// <summary>
        /// The session's whole state (config, pages, positions, counters, the eviction policies' scores) as
        /// one versioned, checksummed blob. A session created with the same config that <see cref="Load"/>s it
        /// computes exactly what this one would have.
        /// </summary>
        public byte[] Save()
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_save(lease.Pointer, out byte[] blob);
            return blob;
        }

        /// <summary>
        /// Replaces the session's state with a <see cref="Save"/> blob of a session with the same config.
        /// A truncated, altered or foreign blob throws <see cref="AttnKitException"/> (InvalidArgument)
        /// and leaves the session as it was.
        /// </summary>
        public void Load(ReadOnlySpan<byte> blob)
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_load(lease.Pointer, blob);
        }

        /// <summary>
        /// A new session with this one's config and state (pages shared copy-on-write on the CPU):
        /// one compressed context, several continuations. Dispose it like any session.
        /// </summary>
        public Session Fork()
        {
            using var lease = _handle.Acquire(this);
            AttnKitNative.attnkit_session_fork(lease.Pointer, out IntPtr fork);
            return new Session(fork);
        }

        /// <summary>Frees the session and its cache; later calls throw ObjectDisposedException.</summary>
        public void Dispose() => _handle.Dispose();

        private static NativeHandle Own(IntPtr session) =>
            new(session, static pointer => AttnKitNative.attnkit_session_free(pointer));
    }
}
