package dev.attnkit;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Arrays;

/**
 * A view of memory as a tensor for one attnkit call: a shape, optional element strides and a dtype
 * over a {@code float[]}, a {@code byte[]} (uint8) or a direct {@link FloatBuffer} / {@link
 * ByteBuffer}. The view borrows its storage: nothing is copied when it is made.
 *
 * <p>Direct buffers cross with no copy at all: the DLTensor attnkit sees points at the buffer's
 * memory (from the buffer's position), so outputs are written straight into it. They must be in
 * the platform's byte order ({@link ByteOrder#nativeOrder()}; see {@link #allocateFloats}). Heap
 * arrays are handed over by the JVM (which may copy them for the call) and outputs are copied back
 * when the call succeeds.
 *
 * <p>A {@code float[]} must hold exactly the shape's elements; a buffer at least that many from its
 * position. With {@link #withStrides} any non-negative strides whose extent fits are accepted, so
 * a [tokens, heads, dim] array can be passed as [1, heads, tokens, dim] without copying.
 */
public final class Tensor {
  /** Element types, as DLPack codes and bits. */
  public enum DType {
    /** 32-bit IEEE float (DLPack kDLFloat, 32 bits). */
    FLOAT32(2, 32),
    /** 16-bit IEEE half float (DLPack kDLFloat, 16 bits). */
    FLOAT16(2, 16),
    /** bfloat16 (DLPack kDLBfloat, 16 bits). */
    BFLOAT16(4, 16),
    /** Unsigned byte (DLPack kDLUInt, 8 bits), e.g. block masks. */
    UINT8(1, 8);

    final int code;
    final int bits;

    DType(int code, int bits) {
      this.code = code;
      this.bits = bits;
    }

    /**
     * The element size.
     *
     * @return bytes per element
     */
    public int bytes() {
      return bits / 8;
    }
  }

  // Storage kinds read by libattnkit_java (attnkit_java_support.c); keep the values in sync.
  static final int STORAGE_DIRECT = 1;
  static final int STORAGE_FLOATS = 2;
  static final int STORAGE_BYTES = 3;

  // Read by libattnkit_java through JNI: names and types are part of the contract.
  private final int storageKind;
  private final Object storage;
  private final long byteOffset;
  private final int dtypeCode;
  private final int dtypeBits;
  private final long[] shape;
  private final long[] strides; // null: compact row-major
  private final boolean readOnly;

  private final DType dtype;
  private final long capacity; // elements available from byteOffset

  private Tensor(
      int storageKind,
      Object storage,
      long byteOffset,
      DType dtype,
      long capacity,
      boolean readOnly,
      long[] shape,
      long[] strides) {
    this.storageKind = storageKind;
    this.storage = storage;
    this.byteOffset = byteOffset;
    this.dtype = dtype;
    this.dtypeCode = dtype.code;
    this.dtypeBits = dtype.bits;
    this.capacity = capacity;
    this.readOnly = readOnly;
    this.shape = shape;
    this.strides = strides;
  }

  /**
   * A float32 tensor over an array (no copy is made here).
   *
   * @param data the elements, exactly as many as the shape's
   * @param shape the dimensions, at most 8, each &gt;= 0
   * @return a view of {@code data}
   * @throws AttnKitException INVALID_ARGUMENT for a null argument, a bad shape or a size mismatch
   */
  public static Tensor of(float[] data, long... shape) {
    requireNonNull(data, "data");
    long[] dims = checkShape(shape);
    if (numel(dims) != data.length) {
      throw invalid("a float[] of " + data.length + " elements cannot have shape " + Arrays.toString(dims));
    }
    return new Tensor(STORAGE_FLOATS, data, 0, DType.FLOAT32, data.length, false, dims, null);
  }

  /**
   * A uint8 tensor over an array (block masks; no copy is made here).
   *
   * @param data the elements, exactly as many as the shape's
   * @param shape the dimensions, at most 8, each &gt;= 0
   * @return a view of {@code data}
   * @throws AttnKitException INVALID_ARGUMENT for a null argument, a bad shape or a size mismatch
   */
  public static Tensor of(byte[] data, long... shape) {
    requireNonNull(data, "data");
    long[] dims = checkShape(shape);
    if (numel(dims) != data.length) {
      throw invalid("a byte[] of " + data.length + " elements cannot have shape " + Arrays.toString(dims));
    }
    return new Tensor(STORAGE_BYTES, data, 0, DType.UINT8, data.length, false, dims, null);
  }

  /**
   * A float32 tensor over a direct, native-order buffer, from its position (zero copy).
   *
   * @param buffer a direct buffer in {@link ByteOrder#nativeOrder()} with at least the shape's
   *     elements remaining
   * @param shape the dimensions, at most 8, each &gt;= 0
   * @return a view of {@code buffer}
   * @throws AttnKitException INVALID_ARGUMENT for a null, heap or non-native-order buffer, a bad
   *     shape or too few elements
   */
  public static Tensor of(FloatBuffer buffer, long... shape) {
    requireDirect(buffer, true);
    long[] dims = checkShape(shape);
    return fitted(
        new Tensor(
            STORAGE_DIRECT,
            buffer,
            (long) buffer.position() * Float.BYTES,
            DType.FLOAT32,
            buffer.remaining(),
            buffer.isReadOnly(),
            dims,
            null));
  }

  /**
   * A tensor of {@code dtype} over a direct buffer, from its position (zero copy).
   *
   * @param buffer a direct buffer, in {@link ByteOrder#nativeOrder()} for multi-byte types, with at
   *     least the shape's elements remaining
   * @param dtype the element type
   * @param shape the dimensions, at most 8, each &gt;= 0
   * @return a view of {@code buffer}
   * @throws AttnKitException INVALID_ARGUMENT for a null argument, a heap or non-native-order
   *     buffer, a bad shape or too few elements
   */
  public static Tensor of(ByteBuffer buffer, DType dtype, long... shape) {
    requireNonNull(dtype, "dtype");
    requireDirect(buffer, dtype.bytes() > 1);
    long[] dims = checkShape(shape);
    return fitted(
        new Tensor(
            STORAGE_DIRECT,
            buffer,
            buffer.position(),
            dtype,
            buffer.remaining() / dtype.bytes(),
            buffer.isReadOnly(),
            dims,
            null));
  }

  /**
   * A direct, native-order float buffer, ready for zero-copy tensors.
   *
   * @param count the number of floats
   * @return a new direct buffer of {@code count} floats in {@link ByteOrder#nativeOrder()}
   * @throws ArithmeticException when {@code count} floats exceed 2^31 - 1 bytes
   */
  public static FloatBuffer allocateFloats(int count) {
    return ByteBuffer.allocateDirect(Math.multiplyExact(count, Float.BYTES))
        .order(ByteOrder.nativeOrder())
        .asFloatBuffer();
  }

  /**
   * The same storage with element strides (DLPack convention).
   *
   * @param strides one stride per dimension, in elements, each &gt;= 0
   * @return a new view of the same storage with these strides
   * @throws AttnKitException INVALID_ARGUMENT for null, negative or mismatched strides, or ones
   *     that address elements past the storage
   */
  public Tensor withStrides(long... strides) {
    requireNonNull(strides, "strides");
    if (strides.length != shape.length) {
      throw invalid(
          "strides " + Arrays.toString(strides) + " do not match shape " + Arrays.toString(shape));
    }
    for (long stride : strides) {
      if (stride < 0) throw invalid("negative strides are not supported: " + Arrays.toString(strides));
    }
    return fitted(
        new Tensor(
            storageKind, storage, byteOffset, dtype, capacity, readOnly, shape, strides.clone()));
  }

  /**
   * The dimensions.
   *
   * @return a copy of the shape
   */
  public long[] shape() {
    return shape.clone();
  }

  /**
   * The element strides.
   *
   * @return a copy of the strides given to {@link #withStrides}, else the compact row-major ones
   */
  public long[] strides() {
    if (strides != null) return strides.clone();
    long[] compact = new long[shape.length];
    long step = 1;
    for (int i = shape.length - 1; i >= 0; --i) {
      compact[i] = step;
      step *= shape[i];
    }
    return compact;
  }

  /**
   * The element type.
   *
   * @return the tensor's dtype
   */
  public DType dtype() {
    return dtype;
  }

  /**
   * The number of elements.
   *
   * @return the product of the shape
   */
  public long numel() {
    return numel(shape);
  }

  /**
   * Whether the tensor is over a direct buffer.
   *
   * @return true when attnkit sees the buffer's memory (no copy)
   */
  public boolean isDirect() {
    return storageKind == STORAGE_DIRECT;
  }

  /**
   * A short description, e.g. "Tensor[2, 3] FLOAT32 direct".
   *
   * @return the shape, the dtype and whether the storage is direct
   */
  @Override
  public String toString() {
    return "Tensor" + Arrays.toString(shape) + " " + dtype + (isDirect() ? " direct" : "");
  }

  /** Checks that every element the shape and strides address lies in the storage. */
  private static Tensor fitted(Tensor tensor) {
    long extent = 0; // highest element index + 1
    if (tensor.numel() > 0) {
      long[] steps = tensor.strides();
      extent = 1;
      for (int i = 0; i < tensor.shape.length; ++i) {
        extent = Math.addExact(extent, Math.multiplyExact(tensor.shape[i] - 1, steps[i]));
      }
    }
    if (extent > tensor.capacity) {
      throw invalid(
          "shape "
              + Arrays.toString(tensor.shape)
              + (tensor.strides != null ? " with strides " + Arrays.toString(tensor.strides) : "")
              + " addresses "
              + extent
              + " elements but the storage holds "
              + tensor.capacity);
    }
    return tensor;
  }

  private static long[] checkShape(long[] shape) {
    requireNonNull(shape, "shape");
    if (shape.length > 8) throw invalid("at most 8 dimensions, got " + shape.length);
    for (long dim : shape) {
      if (dim < 0) throw invalid("negative dimension in shape " + Arrays.toString(shape));
    }
    numel(shape); // overflow check
    return shape.clone();
  }

  private static long numel(long[] shape) {
    long count = 1;
    for (long dim : shape) count = Math.multiplyExact(count, dim);
    return count;
  }

  private static void requireDirect(Buffer buffer, boolean multiByte) {
    requireNonNull(buffer, "buffer");
    if (!buffer.isDirect()) {
      throw invalid("a heap buffer has no address: use a direct buffer or a float[]");
    }
    ByteOrder order =
        buffer instanceof FloatBuffer
            ? ((FloatBuffer) buffer).order()
            : ((ByteBuffer) buffer).order();
    if (multiByte && order != ByteOrder.nativeOrder()) {
      throw invalid(
          "the buffer is "
              + order
              + " but attnkit reads "
              + ByteOrder.nativeOrder()
              + " values: set order(ByteOrder.nativeOrder()) before filling it");
    }
  }

  private static void requireNonNull(Object value, String name) {
    if (value == null) throw invalid(name + " is null");
  }

  private static AttnKitException invalid(String message) {
    return new AttnKitException(AttnKitException.Code.INVALID_ARGUMENT, "tensor: " + message);
  }
}
