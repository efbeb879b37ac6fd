/* JNI helpers of the Java SWIG wrapper (libattnkit_java): the Java side of the typemap contracts of
 * ../attnkit.i that do not fit in one line of a typemap. Compiled into libattnkit_java only.
 *
 * Error convention: a helper that fails leaves a Java exception pending and never returns early
 * from a wrapper; the wrapper's %exception skips the C call while an exception is pending, and the
 * cleanup typemaps release whatever was acquired. */
#ifndef ATTNKIT_BINDINGS_SWIG_JAVA_ATTNKIT_JAVA_SUPPORT_H_
#define ATTNKIT_BINDINGS_SWIG_JAVA_ATTNKIT_JAVA_SUPPORT_H_

#include <jni.h>
#include <stddef.h>
#include <stdint.h>

#include "attnkit/attnkit.h"
#include "attnkit_swig_shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Turns a non-NULL status into a pending dev.attnkit.AttnKitException (code, message) unless an
 * exception is already pending, and frees it. Returns the status code (0 for NULL). */
jint attnkit_java_throw_status(JNIEnv* env, attnkit_status* status);

/* Leaves a pending AttnKitException with `code` and `message`. */
void attnkit_java_throw(JNIEnv* env, attnkit_status_code code, const char* message);

/* A borrowed Java array region (byte[] or long[]), released without copying back. */
typedef struct attnkit_java_array {
  jarray array;
  void* elements;
  size_t length;
  int kind; /* 0 none, 1 byte[], 2 long[] */
} attnkit_java_array;

/* Borrows a byte[] (may be NULL: data NULL, length 0). */
void attnkit_java_bytes_acquire(JNIEnv* env, jbyteArray array, attnkit_java_array* out);
/* Borrows a long[] (may be NULL). */
void attnkit_java_longs_acquire(JNIEnv* env, jlongArray array, attnkit_java_array* out);
void attnkit_java_array_release(JNIEnv* env, attnkit_java_array* array);

/* A dev.attnkit.Tensor seen as a DLTensor for one call: direct buffers by address (zero copy),
 * float[] and byte[] through Get<Type>ArrayElements (copied back for outputs on success). */
typedef struct attnkit_java_tensor {
  attnkit_swig_tensor_desc desc;
  DLTensor storage;
  DLTensor* tensor; /* NULL for a null Tensor or after a failure */
  jarray array;     /* the pinned heap array, if any */
  void* elements;
  int array_kind; /* 0 none, 2 float[], 3 byte[] */
  int is_output;
} attnkit_java_tensor;

void attnkit_java_tensor_acquire(JNIEnv* env, jobject tensor, int is_output,
                                 attnkit_java_tensor* out);
void attnkit_java_tensor_release(JNIEnv* env, attnkit_java_tensor* tensor);

/* Stores `value` into holder[0] (a one-element array) unless an exception is pending. */
void attnkit_java_set_long(JNIEnv* env, jlongArray holder, jlong value);

/* Copies a library-owned buffer into holder[0] as a byte[] (unless an exception is pending) and
 * frees it in every case. */
void attnkit_java_take_buffer(JNIEnv* env, jobjectArray holder, attnkit_buffer* buffer);
/* As attnkit_java_take_buffer() for an int64 array, into a long[]. */
void attnkit_java_take_int64_array(JNIEnv* env, jobjectArray holder, attnkit_int64_array* array);

/* ---- functions the Java module exposes besides the C ABI ---- */

/* A long[] copy of `count` int64 values at `address` (a pointer into a library-owned object,
 * e.g. attnkit_kept_positions_row()); an empty array for count 0. */
jlongArray attnkit_java_copy_int64s(JNIEnv* env, jlong address, jlong count);

/* Test hook: the address the DLTensor of `tensor` points at (data + byte_offset), as every entry
 * point would see it, so tests can check that direct buffers cross without copies. */
jlong attnkit_java_tensor_data_address(const DLTensor* tensor);

/* Test hook: the JVM's address of a direct buffer (GetDirectBufferAddress); 0 for heap buffers. */
jlong attnkit_java_direct_buffer_address(JNIEnv* env, jobject buffer);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_BINDINGS_SWIG_JAVA_ATTNKIT_JAVA_SUPPORT_H_ */
