package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.AttnKitException.Code;
import dev.attnkit.internal.AttnKitNative;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** Tensors from float[] and direct buffers: shapes, strides, and zero copy. */
class TensorTest {
  // One layer, 2 query heads, 1 kv head, head_dim 8, a 3-token prompt.
  static final int HEADS = 2, KV_HEADS = 1, DIM = 8, TOKENS = 3;

  static Session session() {
    return Session.fromText(TestSupport.sessionText(1, HEADS, KV_HEADS, DIM, ""));
  }

  @Test
  void wrongShapesAreInvalidArgument() {
    AttnKitException size = assertThrows(AttnKitException.class, () -> Tensor.of(new float[10], 2, 4));
    assertEquals(Code.INVALID_ARGUMENT, size.code());
    assertTrue(size.statusMessage().contains("[2, 4]"), size.statusMessage());
    Tensor t = Tensor.of(new float[12], 3, 4);
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> t.withStrides(4, 2)).code());
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> t.withStrides(4)).code());
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> Tensor.of(new float[4], -1, -4)).code());

    // Shapes the library checks: k with the wrong head_dim, q of the wrong rank.
    try (Session session = session()) {
      float[] out = new float[HEADS * TOKENS * DIM];
      Arrays.fill(out, 42f);
      AttnKitException k = assertThrows(AttnKitException.class, () -> session.attend(0,
          Tensor.of(new float[HEADS * TOKENS * DIM], 1, HEADS, TOKENS, DIM),
          Tensor.of(new float[KV_HEADS * TOKENS * 4], 1, KV_HEADS, TOKENS, 4),
          Tensor.of(new float[KV_HEADS * TOKENS * DIM], 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(out, 1, HEADS, TOKENS, DIM)));
      assertEquals(Code.INVALID_ARGUMENT, k.code());
      assertTrue(k.statusMessage().startsWith("k"), k.statusMessage());
      // A failed call leaves a float[] output untouched.
      for (float value : out) assertEquals(42f, value);
      AttnKitException q = assertThrows(AttnKitException.class, () -> session.attend(0,
          Tensor.of(new float[HEADS * TOKENS * DIM], HEADS, TOKENS, DIM),
          Tensor.of(new float[KV_HEADS * TOKENS * DIM], 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(new float[KV_HEADS * TOKENS * DIM], 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(out, 1, HEADS, TOKENS, DIM)));
      assertEquals(Code.INVALID_ARGUMENT, q.code());
      assertTrue(q.statusMessage().contains("q"), q.statusMessage());
      AttnKitException nul = assertThrows(AttnKitException.class,
          () -> session.attend(0, null, null, null, null));
      assertEquals(Code.INVALID_ARGUMENT, nul.code());
      assertEquals(0, session.bytesHeld()); // nothing was appended by the failed calls
    }
  }

  @Test
  void buffersMustBeDirectNativeOrderAndWritable() {
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> Tensor.of(FloatBuffer.allocate(4), 4)).code());
    ByteBuffer bigEndian = ByteBuffer.allocateDirect(16).order(ByteOrder.BIG_ENDIAN);
    if (ByteOrder.nativeOrder() != ByteOrder.BIG_ENDIAN) {
      assertThrows(AttnKitException.class, () -> Tensor.of(bigEndian, Tensor.DType.FLOAT32, 4));
      assertThrows(AttnKitException.class, () -> Tensor.of(bigEndian.asFloatBuffer(), 4));
    }
    assertThrows(AttnKitException.class, () -> Tensor.of(Tensor.allocateFloats(3), 4));
    Tensor readOnly = Tensor.of(Tensor.allocateFloats(HEADS * TOKENS * DIM).asReadOnlyBuffer(), 1, HEADS, TOKENS, DIM);
    try (Session session = session()) {
      AttnKitException e = assertThrows(AttnKitException.class, () -> session.attend(0,
          Tensor.of(new float[HEADS * TOKENS * DIM], 1, HEADS, TOKENS, DIM),
          Tensor.of(new float[KV_HEADS * TOKENS * DIM], 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(new float[KV_HEADS * TOKENS * DIM], 1, KV_HEADS, TOKENS, DIM), readOnly));
      assertEquals(Code.INVALID_ARGUMENT, e.code());
      assertTrue(e.statusMessage().contains("read-only"), e.statusMessage());
    }
  }

  @Test
  void theNativeSideSeesTheDirectBuffersAddress() {
    FloatBuffer whole = Tensor.allocateFloats(64);
    long base = AttnKitNative.attnkit_java_direct_buffer_address(whole);
    assertNotEquals(0, base);
    whole.position(8);
    assertEquals(base + 8 * Float.BYTES,
        AttnKitNative.attnkit_java_tensor_data_address(Tensor.of(whole, 2, 4, 7)));
    ByteBuffer bytes = ByteBuffer.allocateDirect(64).order(ByteOrder.nativeOrder());
    bytes.position(16);
    assertEquals(AttnKitNative.attnkit_java_direct_buffer_address(bytes) + 16,
        AttnKitNative.attnkit_java_tensor_data_address(Tensor.of(bytes, Tensor.DType.UINT8, 48)));
  }

  @Test
  void directBuffersAreReadAndWrittenInPlace() {
    float[] q = TestSupport.random(1, HEADS * TOKENS * DIM);
    float[] k = TestSupport.random(2, KV_HEADS * TOKENS * DIM);
    float[] v = TestSupport.random(3, KV_HEADS * TOKENS * DIM);
    float[] expected = new float[q.length];
    try (Session session = session()) {
      session.attend(0, Tensor.of(q, 1, HEADS, TOKENS, DIM), Tensor.of(k, 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(v, 1, KV_HEADS, TOKENS, DIM), Tensor.of(expected, 1, HEADS, TOKENS, DIM));
    }
    // The views are made over zeroed buffers and filled afterwards: attnkit reads the buffers' memory
    // at the call, and writes the output straight into the output buffer.
    FloatBuffer qb = Tensor.allocateFloats(q.length), kb = Tensor.allocateFloats(k.length);
    FloatBuffer vb = Tensor.allocateFloats(v.length), ob = Tensor.allocateFloats(q.length);
    Tensor qt = Tensor.of(qb, 1, HEADS, TOKENS, DIM), kt = Tensor.of(kb, 1, KV_HEADS, TOKENS, DIM);
    Tensor vt = Tensor.of(vb, 1, KV_HEADS, TOKENS, DIM), ot = Tensor.of(ob, 1, HEADS, TOKENS, DIM);
    qb.duplicate().put(q);
    kb.duplicate().put(k);
    vb.duplicate().put(v);
    try (Session session = session()) {
      session.attend(0, qt, kt, vt, ot);
    }
    float[] actual = new float[q.length];
    ob.duplicate().get(actual);
    assertArrayEquals(expected, actual);
  }

  @Test
  void stridedViewsNeedNoCopies() {
    // q laid out [tokens, heads, dim] and passed as [1, heads, tokens, dim], as the samples do.
    float[] q = TestSupport.random(4, HEADS * TOKENS * DIM);
    float[] k = TestSupport.random(5, KV_HEADS * TOKENS * DIM);
    float[] v = TestSupport.random(6, KV_HEADS * TOKENS * DIM);
    float[] qHeadMajor = new float[q.length];
    for (int t = 0; t < TOKENS; ++t) {
      for (int h = 0; h < HEADS; ++h) {
        System.arraycopy(q, (t * HEADS + h) * DIM, qHeadMajor, (h * TOKENS + t) * DIM, DIM);
      }
    }
    float[] compact = new float[q.length];
    float[] strided = new float[q.length];
    try (Session session = session()) {
      session.attend(0, Tensor.of(qHeadMajor, 1, HEADS, TOKENS, DIM), Tensor.of(k, 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(v, 1, KV_HEADS, TOKENS, DIM), Tensor.of(compact, 1, HEADS, TOKENS, DIM));
    }
    long[] tokenMajor = {(long) TOKENS * HEADS * DIM, DIM, (long) HEADS * DIM, 1};
    try (Session session = session()) {
      session.attend(0, Tensor.of(q, 1, HEADS, TOKENS, DIM).withStrides(tokenMajor),
          Tensor.of(k, 1, KV_HEADS, TOKENS, DIM), Tensor.of(v, 1, KV_HEADS, TOKENS, DIM),
          Tensor.of(strided, 1, HEADS, TOKENS, DIM).withStrides(tokenMajor));
    }
    for (int t = 0; t < TOKENS; ++t) {
      for (int h = 0; h < HEADS; ++h) {
        for (int d = 0; d < DIM; ++d) {
          assertEquals(compact[(h * TOKENS + t) * DIM + d], strided[(t * HEADS + h) * DIM + d], 1e-6f);
        }
      }
    }
  }
}
