package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Where the native library came from: run from the jar alone (ctest java_loader_jar). */
class LoaderTest {
  @Test
  void loadsFromTheExpectedSourceAndChecksTheAbi() {
    String expected = System.getProperty("attnkit.test.expected_source", "jar");
    String source = AttnKit.nativeLibrarySource();
    assertTrue(source.startsWith(expected), source);
    assertEquals(AttnKit.ABI_VERSION, AttnKit.abiVersion());
    assertEquals(1, AttnKit.ABI_VERSION);
    assertFalse(AttnKit.version().isEmpty());
    if (expected.equals("jar")) {
      assertEquals("", System.getProperty("attnkit.native.dir", ""));
    }
  }

  @Test
  void numThreadsIsSetReadBackAndValidated() {
    assertEquals(0, AttnKit.numThreads());
    try {
      AttnKit.setNumThreads(1);
      assertEquals(1, AttnKit.numThreads());
      AttnKitException e = assertThrows(AttnKitException.class, () -> AttnKit.setNumThreads(-1));
      assertEquals(AttnKitException.Code.INVALID_ARGUMENT, e.code());
      assertTrue(e.getMessage().contains("num_threads"), e.getMessage());
      assertEquals(1, AttnKit.numThreads());
    } finally {
      AttnKit.setNumThreads(0);
    }
    assertEquals(0, AttnKit.numThreads());
  }
}
