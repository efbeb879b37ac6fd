package dev.attnkit;

import com.google.protobuf.InvalidProtocolBufferException;
import dev.attnkit.internal.AttnKitNative;
import dev.attnkit.proto.SessionConfig;
import dev.attnkit.proto.SessionStats;

/**
 * An attention-wrapping session for one batch of sequences: hand it every layer's attention call
 * ({@link #attend}); it owns the KV cache in fixed-size pages, computes attention, applies the
 * eviction policy and frees pages, so the bytes held follow the budget.
 *
 * <p>Not thread-safe: one thread at a time (the C ABI's rule). Close it when done (try with
 * resources); double close is a no-op, any other use after close throws IllegalStateException.
 */
public final class Session implements AutoCloseable {
  private final NativeHandle handle;

  private Session(long pointer) {
    handle = NativeHandle.own(this, "Session", pointer, AttnKitNative::attnkit_session_free);
  }

  /**
   * A session from a typed configuration (model shape + policies).
   *
   * @param config the session configuration
   * @return the new session, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for an invalid configuration
   */
  public static Session create(SessionConfig config) {
    return create(config.toByteArray());
  }

  /**
   * A session from a serialized attnkit.v1.SessionConfig.
   *
   * @param config a serialized attnkit.v1.SessionConfig
   * @return the new session, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for bytes that do not parse or an invalid
   *     configuration
   */
  public static Session create(byte[] config) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_session_create(config, created);
    return new Session(created[0]);
  }

  /**
   * A session from an attnkit.v1.SessionConfig in textproto.
   *
   * @param text an attnkit.v1.SessionConfig in textproto
   * @return the new session, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for text that does not parse or an invalid
   *     configuration
   */
  public static Session fromText(String text) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_session_create_from_text(text, created);
    return new Session(created[0]);
  }

  /**
   * One attention call of {@code layer} (layers in order within a step, from 0): q [batch, heads,
   * tokens, head_dim], k and v [batch, kv_heads, tokens, head_dim] for the new tokens (RoPE
   * applied), any strides; writes causal attention over the cache and the new tokens into {@code
   * out} (q's shape), then evicts the layer down to its budget.
   *
   * @param layer the layer, from 0, in order within a step
   * @param q the queries [batch, heads, tokens, head_dim]
   * @param k the new keys [batch, kv_heads, tokens, head_dim]
   * @param v the new values [batch, kv_heads, tokens, head_dim]
   * @param out receives the attention output, q's shape
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer or tensor (e.g. a NaN), or the
   *     library's other codes (RESOURCE_EXHAUSTED when memory runs out)
   * @throws IllegalStateException after {@link #close()}
   */
  public void attend(int layer, Tensor q, Tensor k, Tensor v, Tensor out) {
    handle.run(p -> AttnKitNative.attnkit_session_attend(p, layer, q, k, v, out));
  }

  /**
   * A ragged call of {@code layer} (continuous batching): sequence b brings {@code newTokens[b]}
   * new tokens (0 to the tokens dimension; 0: it sits the step out), the first rows of its q, k
   * and v (shapes as {@link #attend}); the rows beyond are padding and never read. One sequence can
   * prefill while the others decode. {@code out} gets each sequence's attention in its first
   * newTokens[b] rows and zeros beyond. Every layer of a step takes the same counts; policies,
   * budgets and positions are per sequence.
   *
   * @param layer the layer, from 0, in order within a step
   * @param q the queries [batch, heads, tokens, head_dim]
   * @param k the new keys [batch, kv_heads, tokens, head_dim]
   * @param v the new values [batch, kv_heads, tokens, head_dim]
   * @param out receives the attention output, q's shape
   * @param newTokens per sequence, how many of the tokens it brings (batch_size entries)
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer, tensor or count (the session is then
   *     unchanged)
   * @throws IllegalStateException after {@link #close()}
   */
  public void attendRagged(int layer, Tensor q, Tensor k, Tensor v, Tensor out, long[] newTokens) {
    handle.run(
        p -> AttnKitNative.attnkit_session_attend_ragged(p, layer, q, k, v, out, newTokens));
  }

  /**
   * Retires {@code sequence} (a finished request): its pages go back to the pool, its policy state
   * and positions restart; the other sequences are untouched. Its slot then takes a new sequence
   * through {@link #attendRagged}. Between steps only.
   *
   * @param sequence the sequence, from 0
   * @throws AttnKitException INVALID_ARGUMENT for a sequence out of range; FAILED_PRECONDITION while
   *     a step or an observe pass is partway through its layers
   * @throws IllegalStateException after {@link #close()}
   */
  public void resetSequence(int sequence) {
    handle.run(p -> AttnKitNative.attnkit_session_reset_sequence(p, sequence));
  }

  /**
   * An observe-only call of {@code layer}: the queries q [batch, heads, tokens, head_dim] (RoPE
   * applied at the positions after the sequence, {@link #nextPosition} + t) attend to the layer's
   * cache as it is, every query seeing every cached token, and feed the eviction policy's scores as
   * an {@link #attend} call's queries would (a question, or KVzip's "repeat the context" prompt).
   * Nothing is appended or evicted; {@code out} (q's shape, or null) receives the attention over
   * the cache. Observe passes run the layers in order from 0, between steps.
   *
   * @param layer the layer, from 0, in order within an observe pass
   * @param q the queries [batch, heads, tokens, head_dim]
   * @param out receives the attention over the cache, q's shape, or null
   * @throws AttnKitException INVALID_ARGUMENT for a bad layer or tensor; FAILED_PRECONDITION out of
   *     layer order, during a step or over an empty cache (the session is then unchanged)
   * @throws IllegalStateException after {@link #close()}
   */
  public void observe(int layer, Tensor q, Tensor out) {
    handle.run(p -> AttnKitNative.attnkit_session_observe(p, layer, q, out));
  }

  /**
   * {@link #observe(int, Tensor, Tensor)} without an output.
   *
   * @param layer the layer, from 0, in order within an observe pass
   * @param q the queries [batch, heads, tokens, head_dim]
   * @throws AttnKitException as {@link #observe(int, Tensor, Tensor)}
   * @throws IllegalStateException after {@link #close()}
   */
  public void observe(int layer, Tensor q) {
    observe(layer, q, null);
  }

  /**
   * The session's statistics.
   *
   * @return the counters and sizes of the session
   * @throws IllegalStateException after {@link #close()}
   */
  public SessionStats stats() {
    byte[][] bytes = new byte[1][];
    handle.run(p -> AttnKitNative.attnkit_session_stats(p, bytes));
    try {
      return SessionStats.parseFrom(bytes[0]);
    } catch (InvalidProtocolBufferException e) {
      throw new AttnKitException(AttnKitException.Code.INTERNAL, "SessionStats does not parse: " + e, e);
    }
  }

  /**
   * The memory the cache holds.
   *
   * @return bytes of KV pages in use (keys and values, every layer)
   * @throws IllegalStateException after {@link #close()}
   */
  public long bytesHeld() {
    long[] held = new long[1];
    handle.run(p -> AttnKitNative.attnkit_session_bytes_held(p, held));
    return held[0];
  }

  /**
   * The positions cached for one layer, sequence and kv head.
   *
   * @param layer the layer, from 0
   * @param sequence the sequence of the batch, from 0
   * @param kvHead the kv head, from 0
   * @return original positions (0 = first prompt token), in cache order
   * @throws AttnKitException for an index out of range
   * @throws IllegalStateException after {@link #close()}
   */
  public long[] positions(int layer, int sequence, int kvHead) {
    long[][] positions = new long[1][];
    handle.run(p -> AttnKitNative.attnkit_session_positions(p, layer, sequence, kvHead, positions));
    return positions[0];
  }

  /**
   * The position of a sequence's next token.
   *
   * @param sequence the sequence of the batch, from 0
   * @return the RoPE position to give the next token of {@code sequence}
   * @throws AttnKitException for an index out of range
   * @throws IllegalStateException after {@link #close()}
   */
  public long nextPosition(int sequence) {
    long[] position = new long[1];
    handle.run(p -> AttnKitNative.attnkit_session_next_position(p, sequence, position));
    return position[0];
  }

  /**
   * Drops every cached token and policy state to start a new prompt.
   *
   * @throws IllegalStateException after {@link #close()}
   */
  public void reset() {
    handle.run(AttnKitNative::attnkit_session_reset);
  }

  /**
   * The session's whole state (config, pages, positions, counters, the eviction policies' scores)
   * as one versioned, checksummed blob. A session created with the same config that {@link #load}s
   * it computes exactly what this one would have.
   *
   * @return the saved state
   * @throws IllegalStateException after {@link #close()}
   */
  public byte[] save() {
    byte[][] blob = new byte[1][];
    handle.run(p -> AttnKitNative.attnkit_session_save(p, blob));
    return blob[0];
  }

  /**
   * Replaces the session's state with a {@link #save} blob of a session with the same config. A
   * truncated, altered or foreign blob throws {@link AttnKitException} (INVALID_ARGUMENT) and
   * leaves the session as it was.
   *
   * @param blob a blob from {@link #save}
   * @throws AttnKitException INVALID_ARGUMENT for a truncated, altered or foreign blob
   * @throws IllegalStateException after {@link #close()}
   */
  public void load(byte[] blob) {
    handle.run(p -> AttnKitNative.attnkit_session_load(p, blob));
  }

  /**
   * A new session with this one's config and state (pages shared copy-on-write on the CPU): one
   * compressed context, several continuations. Close it like any session.
   *
   * @return the new session, to be closed
   * @throws IllegalStateException after {@link #close()}
   */
  public Session fork() {
    long[] forked = new long[1];
    handle.run(p -> AttnKitNative.attnkit_session_fork(p, forked));
    return new Session(forked[0]);
  }

  /**
   * Whether {@link #close()} was called.
   *
   * @return true once the session is closed
   */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /** Frees the session and its cache; a second close does nothing. */
  @Override
  public void close() {
    handle.close();
  }
}
