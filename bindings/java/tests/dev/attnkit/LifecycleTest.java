package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.AttnKitException.Code;
import org.junit.jupiter.api.Test;

/** Close, double close, use after close, and the ABI check. */
class LifecycleTest {
  @Test
  void doubleCloseIsANoOp() {
    Session session = Session.fromText(TestSupport.sessionText());
    EvictionPolicy policy = EvictionPolicy.fromText("enabled: true granularity: PER_TOKEN recent_tokens: 8", 2, 2, 1);
    SparseAttention sparse = SparseAttention.fromText("mode: DENSE");
    VisualPruner pruner = VisualPruner.fromText("method: UNIFORM_GRID num_keep_tokens: 2");
    VisualSelection selection = pruner.select(null, Tensor.of(new float[4 * 3], 4, 3), null);
    for (AutoCloseable closeable : new AutoCloseable[] {session, policy, sparse, pruner, selection}) {
      assertDoesNotThrowTwice(closeable);
    }
    assertTrue(session.isClosed() && policy.isClosed() && sparse.isClosed() && pruner.isClosed()
        && selection.isClosed());
  }

  private static void assertDoesNotThrowTwice(AutoCloseable closeable) {
    try {
      closeable.close();
      closeable.close();
    } catch (Exception e) {
      throw new AssertionError(closeable + " threw on close", e);
    }
  }

  @Test
  void useAfterCloseThrowsIllegalState() {
    Session session = Session.fromText(TestSupport.sessionText());
    assertFalse(session.isClosed());
    session.close();
    IllegalStateException e = assertThrows(IllegalStateException.class, session::bytesHeld);
    assertTrue(e.getMessage().contains("Session is closed"), e.getMessage());
    assertThrows(IllegalStateException.class, () -> session.attend(0, null, null, null, null));
    assertThrows(IllegalStateException.class, session::stats);
    assertThrows(IllegalStateException.class, session::reset);

    EvictionPolicy policy = EvictionPolicy.fromText("enabled: true granularity: PER_TOKEN recent_tokens: 8", 2, 2, 1);
    policy.close();
    assertThrows(IllegalStateException.class, () -> policy.select(0, null, 4));
    assertThrows(IllegalStateException.class, policy::needsKeys);

    SparseAttention sparse = SparseAttention.fromText("mode: DENSE");
    sparse.close();
    assertThrows(IllegalStateException.class, () -> sparse.maskShape(2, 8, 8));

    VisualPruner pruner = VisualPruner.fromText("method: UNIFORM_GRID num_keep_tokens: 2");
    VisualSelection selection = pruner.select(null, Tensor.of(new float[4 * 3], 4, 3), null);
    pruner.close();
    assertThrows(IllegalStateException.class, () -> pruner.select(null, Tensor.of(new float[12], 4, 3), null));
    // A selection outlives its pruner.
    assertEquals(2, selection.keptIndices(0).length);
    selection.close();
    assertThrows(IllegalStateException.class, selection::numImages);
  }

  @Test
  void tryWithResourcesCloses() {
    Session outside;
    try (Session session = Session.fromText(TestSupport.sessionText())) {
      outside = session;
      assertEquals(0, session.bytesHeld());
    }
    assertTrue(outside.isClosed());
  }

  @Test
  void theAbiVersionIsChecked() {
    assertEquals(1, AttnKit.ABI_VERSION);
    assertEquals(AttnKit.ABI_VERSION, AttnKit.abiVersion());
    String expected = System.getProperty("attnkit.test.expected_source", "");
    assertTrue(AttnKit.nativeLibrarySource().startsWith(expected), AttnKit.nativeLibrarySource());
    AttnKit.checkAbi(1, 1);
    AttnKitException e = assertThrows(AttnKitException.class, () -> AttnKit.checkAbi(2, 1));
    assertEquals(Code.FAILED_PRECONDITION, e.code());
    assertTrue(e.statusMessage().contains("ABI version 2"), e.statusMessage());
    assertTrue(e.statusMessage().contains("built for ABI version 1"), e.statusMessage());
  }
}
