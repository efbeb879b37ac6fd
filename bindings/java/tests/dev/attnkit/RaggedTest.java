package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.AttnKitException.Code;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/**
 * Session.attendRagged / resetSequence: one sequence prefilling while the other decodes, and a
 * retired sequence's slot reused, compute for each sequence exactly what a session of its own
 * computes.
 */
class RaggedTest {
  private static final int HEADS = 2, KV_HEADS = 1, DIM = 8;
  private static final String POLICY =
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 1 "
          + "intermediate_tokens: 4 recent_tokens: 2 window_size: 2 }";

  private static Session create(int batch) {
    return Session.fromText(
        TestSupport.sessionText(1, HEADS, KV_HEADS, DIM, "batch_size: " + batch + " " + POLICY));
  }

  private int seed = 1;

  private void step(Session ragged, Session[] own, long[] counts) {
    int width = (int) Math.max(counts[0], counts[1]);
    int qRow = HEADS * width * DIM, kvRow = KV_HEADS * width * DIM;
    float[] q = new float[2 * qRow], k = new float[2 * kvRow], v = new float[2 * kvRow];
    Arrays.fill(q, Float.NaN); // padding: never read
    Arrays.fill(k, Float.NaN);
    Arrays.fill(v, Float.NaN);
    float[][] want = new float[2][];
    for (int b = 0; b < 2; ++b) {
      int n = (int) counts[b];
      if (n == 0) continue;
      float[] qb = TestSupport.random(seed++, HEADS * n * DIM);
      float[] kb = TestSupport.random(seed++, KV_HEADS * n * DIM);
      float[] vb = TestSupport.random(seed++, KV_HEADS * n * DIM);
      for (int h = 0; h < HEADS; ++h) {
        System.arraycopy(qb, h * n * DIM, q, b * qRow + h * width * DIM, n * DIM);
      }
      for (int h = 0; h < KV_HEADS; ++h) {
        System.arraycopy(kb, h * n * DIM, k, b * kvRow + h * width * DIM, n * DIM);
        System.arraycopy(vb, h * n * DIM, v, b * kvRow + h * width * DIM, n * DIM);
      }
      want[b] = new float[HEADS * n * DIM];
      own[b].attend(0, Tensor.of(qb, 1, HEADS, n, DIM), Tensor.of(kb, 1, KV_HEADS, n, DIM),
          Tensor.of(vb, 1, KV_HEADS, n, DIM), Tensor.of(want[b], 1, HEADS, n, DIM));
    }
    float[] out = new float[2 * qRow];
    ragged.attendRagged(0, Tensor.of(q, 2, HEADS, width, DIM),
        Tensor.of(k, 2, KV_HEADS, width, DIM), Tensor.of(v, 2, KV_HEADS, width, DIM),
        Tensor.of(out, 2, HEADS, width, DIM), counts);
    for (int b = 0; b < 2; ++b) {
      int n = (int) counts[b];
      for (int h = 0; h < HEADS; ++h) {
        for (int t = 0; t < width; ++t) {
          for (int d = 0; d < DIM; ++d) {
            float got = out[b * qRow + (h * width + t) * DIM + d];
            float expected = t < n ? want[b][(h * n + t) * DIM + d] : 0f;
            assertEquals(expected, got, 0f, "sequence " + b + " head " + h + " row " + t);
          }
        }
      }
    }
    assertEquals(own[0].bytesHeld() + own[1].bytesHeld(), ragged.bytesHeld());
  }

  @Test
  void eachSequenceComputesWhatItsOwnSessionComputes() {
    Session[] own = {create(1), create(1)};
    try (Session ragged = create(2)) {
      step(ragged, own, new long[] {9, 0});
      step(ragged, own, new long[] {1, 12}); // one decodes while the other prefills
      for (int i = 0; i < 6; ++i) step(ragged, own, new long[] {1, 1});
      ragged.resetSequence(0);
      own[0].close();
      own[0] = create(1);
      assertEquals(0, ragged.nextPosition(0));
      step(ragged, own, new long[] {5, 1});
      for (int i = 0; i < 4; ++i) step(ragged, own, new long[] {1, 1});

      float[] q = new float[2 * HEADS * 2 * DIM], kv = new float[2 * KV_HEADS * 2 * DIM];
      AttnKitException e = assertThrows(AttnKitException.class,
          () -> ragged.attendRagged(0, Tensor.of(q, 2, HEADS, 2, DIM),
              Tensor.of(kv, 2, KV_HEADS, 2, DIM), Tensor.of(kv, 2, KV_HEADS, 2, DIM),
              Tensor.of(q, 2, HEADS, 2, DIM), new long[] {3, 1}));
      assertEquals(Code.INVALID_ARGUMENT, e.code());
      assertTrue(e.getMessage().contains("new_tokens: sequence 0 brings 3 tokens"), e.getMessage());
      e = assertThrows(AttnKitException.class, () -> ragged.resetSequence(2));
      assertTrue(e.getMessage().contains("sequence: must be in [0, 2), got 2"), e.getMessage());
    } finally {
      for (Session s : own) s.close();
    }
  }
}
