package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** Session attention against a plain Java reference, and the policy objects. */
class PolicyTest {
  @Test
  void sessionAttentionMatchesAJavaReference() {
    final int heads = 4, kvHeads = 2, dim = 8, tokens = 5;
    float[] q = TestSupport.random(11, heads * tokens * dim);
    float[] k = TestSupport.random(12, kvHeads * tokens * dim);
    float[] v = TestSupport.random(13, kvHeads * tokens * dim);
    float[] out = new float[q.length];
    try (Session session = Session.fromText(TestSupport.sessionText(1, heads, kvHeads, dim, ""))) {
      session.attend(0, Tensor.of(q, 1, heads, tokens, dim), Tensor.of(k, 1, kvHeads, tokens, dim),
          Tensor.of(v, 1, kvHeads, tokens, dim), Tensor.of(out, 1, heads, tokens, dim));
      assertEquals(tokens, session.positions(0, 0, 0).length);
      assertEquals(tokens, session.nextPosition(0));
      assertTrue(session.bytesHeld() > 0);
    }
    final double scale = 1 / Math.sqrt(dim);
    for (int h = 0; h < heads; ++h) {
      int kv = h / (heads / kvHeads);
      for (int t = 0; t < tokens; ++t) {
        double[] weights = new double[t + 1];
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int d = 0; d < dim; ++d) dot += q[(h * tokens + t) * dim + d] * k[(kv * tokens + s) * dim + d];
          weights[s] = dot * scale;
          max = Math.max(max, weights[s]);
        }
        for (int s = 0; s <= t; ++s) sum += weights[s] = Math.exp(weights[s] - max);
        for (int d = 0; d < dim; ++d) {
          double expected = 0;
          for (int s = 0; s <= t; ++s) expected += weights[s] / sum * v[(kv * tokens + s) * dim + d];
          assertEquals(expected, out[(h * tokens + t) * dim + d], 1e-5, "head " + h + " token " + t);
        }
      }
    }
  }

  @Test
  void evictionPolicyKeepsItsBudget() {
    final int heads = 2, kvHeads = 1, tokens = 32;
    try (EvictionPolicy policy = EvictionPolicy.fromText(
        "enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 recent_tokens: 4 intermediate_tokens: 6",
        1, heads, kvHeads)) {
      assertFalse(policy.needsKeys());
      assertFalse(policy.perHead());
      long budget = policy.layerBudget(0);
      assertEquals(12, budget);
      float[] attention = new float[heads * tokens];
      for (int i = 0; i < attention.length; ++i) attention[i] = (i % 7 == 0) ? 0.5f : 0.01f;
      policy.observe(0, Tensor.of(attention, 1, heads, 1, tokens));
      long[][] kept = policy.select(0, null, tokens);
      assertEquals(1, kept.length);
      assertEquals(budget, kept[0].length);
      long[] sorted = kept[0].clone();
      Arrays.sort(sorted);
      assertArrayEquals(sorted, kept[0]);
      assertEquals(0, kept[0][0]);
      assertEquals(tokens - 1, kept[0][kept[0].length - 1]);
      policy.reset();
    }
  }

  @Test
  void sparseAttentionDenseMatchesItsOwnMaskPath() {
    final int heads = 2, len = 8, dim = 4;
    float[] q = TestSupport.random(21, heads * len * dim);
    float[] k = TestSupport.random(22, heads * len * dim);
    float[] v = TestSupport.random(23, heads * len * dim);
    try (SparseAttention sparse = SparseAttention.fromText("mode: DENSE block_size: 4")) {
      long[] shape = sparse.maskShape(heads, len, len);
      assertArrayEquals(new long[] {1, 2, 2}, shape);
      Tensor qt = Tensor.of(q, 1, heads, len, dim), kt = Tensor.of(k, 1, heads, len, dim);
      Tensor vt = Tensor.of(v, 1, heads, len, dim);
      byte[] mask = new byte[4];
      sparse.buildMask(qt, kt, Tensor.of(mask, 1, shape[0], shape[1], shape[2]));
      assertArrayEquals(new byte[] {1, 0, 1, 1}, mask); // block-causal
      float[] viaMask = new float[q.length];
      float[] viaPrefill = new float[q.length];
      sparse.attention(qt, kt, vt, Tensor.of(mask, 1, 1, 2, 2), 0, Tensor.of(viaMask, 1, heads, len, dim));
      double density = sparse.prefill(qt, kt, vt, 0, Tensor.of(viaPrefill, 1, heads, len, dim));
      assertEquals(1.0, density, 1e-12);
      assertArrayEquals(viaMask, viaPrefill, 1e-6f);
    }
  }

  @Test
  void visualPrunerSelectsWithinTheImage() {
    final int tokens = 16, features = 8;
    try (VisualPruner pruner = VisualPruner.fromText("method: UNIFORM_GRID num_keep_tokens: 4");
        VisualSelection selection = pruner.select(null, Tensor.of(TestSupport.random(31, tokens * features), tokens, features), null)) {
      assertEquals(1, selection.numImages());
      assertEquals(tokens, selection.imageSize(0));
      long[] kept = selection.keptIndices(0);
      assertEquals(4, kept.length);
      for (int i = 0; i < kept.length; ++i) {
        assertTrue(kept[i] >= 0 && kept[i] < tokens);
        if (i > 0) assertTrue(kept[i] > kept[i - 1]);
      }
      assertArrayEquals(kept, selection.flatIndices());
      // A prompt: 2 text tokens, the 16 image tokens, 3 text tokens.
      byte[] mask = new byte[2 + tokens + 3];
      Arrays.fill(mask, 2, 2 + tokens, (byte) 1);
      long[] positions = selection.keptPositions(mask);
      assertEquals(2 + 4 + 3, positions.length);
      assertEquals(0, positions[0]);
      assertEquals(2 + kept[0], positions[2]);
    }
  }
}
