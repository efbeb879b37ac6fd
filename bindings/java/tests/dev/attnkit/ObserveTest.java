package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.AttnKitException.Code;
import org.junit.jupiter.api.Test;

/** Session.observe: queries that score the cache without entering it. */
class ObserveTest {
  @Test
  void observeAttendsTheCacheAndAppendsNothing() {
    String policies = "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
        + "intermediate_tokens: 2 recent_tokens: 1 defer_eviction_to_decode: true }";
    try (Session session = Session.fromText(TestSupport.sessionText(1, 2, 1, 8, policies))) {
      session.attend(0, Tensor.of(TestSupport.random(1, 2 * 6 * 8), 1, 2, 6, 8),
          Tensor.of(TestSupport.random(2, 6 * 8), 1, 1, 6, 8),
          Tensor.of(TestSupport.random(3, 6 * 8), 1, 1, 6, 8), Tensor.of(new float[2 * 6 * 8], 1, 2, 6, 8));
      long held = session.bytesHeld();
      float[] out = new float[2 * 3 * 8];
      session.observe(0, Tensor.of(TestSupport.random(4, 2 * 3 * 8), 1, 2, 3, 8), Tensor.of(out, 1, 2, 3, 8));
      session.observe(0, Tensor.of(TestSupport.random(4, 2 * 3 * 8), 1, 2, 3, 8));
      boolean nonzero = false;
      for (float v : out) nonzero |= v != 0;
      assertTrue(nonzero);
      assertEquals(held, session.bytesHeld());
      assertEquals(6, session.nextPosition(0));
      AttnKitException e = assertThrows(AttnKitException.class,
          () -> session.observe(1, Tensor.of(new float[2 * 3 * 8], 1, 2, 3, 8)));
      assertEquals(Code.INVALID_ARGUMENT, e.code());
    }
  }
}
