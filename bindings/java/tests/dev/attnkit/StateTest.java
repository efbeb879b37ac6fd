package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.AttnKitException.Code;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** Session.save / load / fork: the loaded and forked sessions go on bit for bit as the original. */
class StateTest {
  private static final String POLICY =
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
          + "intermediate_tokens: 2 recent_tokens: 1 }";

  private static float[] step(Session s, int tokens, int seed) {
    float[] out = new float[2 * tokens * 8];
    s.attend(0, Tensor.of(TestSupport.random(seed, 2 * tokens * 8), 1, 2, tokens, 8),
        Tensor.of(TestSupport.random(seed + 1, tokens * 8), 1, 1, tokens, 8),
        Tensor.of(TestSupport.random(seed + 2, tokens * 8), 1, 1, tokens, 8),
        Tensor.of(out, 1, 2, tokens, 8));
    return out;
  }

  @Test
  void saveLoadAndForkGoOnBitForBit() {
    String text = TestSupport.sessionText(1, 2, 1, 8, POLICY);
    try (Session original = Session.fromText(text); Session loaded = Session.fromText(text)) {
      step(original, 6, 10);
      byte[] blob = original.save();
      loaded.load(blob);
      try (Session fork = original.fork()) {
        for (int i = 0; i < 5; ++i) { // a 4-token budget: every step evicts
          float[] want = step(original, 1, 20 + 3 * i);
          assertArrayEquals(want, step(loaded, 1, 20 + 3 * i));
          assertArrayEquals(want, step(fork, 1, 20 + 3 * i));
        }
        assertArrayEquals(original.positions(0, 0, 0), fork.positions(0, 0, 0));
      }
      byte[] before = loaded.save();
      AttnKitException e = assertThrows(AttnKitException.class,
          () -> loaded.load(Arrays.copyOf(blob, blob.length - 1)));
      assertEquals(Code.INVALID_ARGUMENT, e.code());
      assertTrue(e.getMessage().contains("blob: truncated"), e.getMessage());
      assertArrayEquals(before, loaded.save());
    }
  }
}
