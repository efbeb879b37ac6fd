#include "attnkit_java_support.h"

#include <string.h>

/* dev.attnkit.Tensor's storage kinds (Tensor.STORAGE_*). */
enum { kStorageDirect = 1, kStorageFloats = 2, kStorageBytes = 3 };

jint attnkit_java_throw_status(JNIEnv* env, attnkit_status* status) {
  if (status == NULL) return 0;
  const attnkit_status_code code = attnkit_status_get_code(status);
  /* An exception raised while preparing the arguments explains the failure better. */
  if (!(*env)->ExceptionCheck(env))
    attnkit_java_throw(env, code, attnkit_status_get_message(status));
  attnkit_status_free(status);
  return (jint)code;
}

void attnkit_java_throw(JNIEnv* env, attnkit_status_code code, const char* message) {
  /* The message crosses as UTF-8 bytes: NewStringUTF expects modified UTF-8. */
  jclass cls = (*env)->FindClass(env, "dev/attnkit/AttnKitException");
  if (cls == NULL) return; /* NoClassDefFoundError pending */
  jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(I[B)V");
  if (ctor == NULL) return;
  const jsize length = (jsize)strlen(message);
  jbyteArray bytes = (*env)->NewByteArray(env, length);
  if (bytes == NULL) return;
  (*env)->SetByteArrayRegion(env, bytes, 0, length, (const jbyte*)message);
  jobject exception = (*env)->NewObject(env, cls, ctor, (jint)code, bytes);
  if (exception != NULL) (*env)->Throw(env, (jthrowable)exception);
  (*env)->DeleteLocalRef(env, bytes);
  (*env)->DeleteLocalRef(env, cls);
}

static void throw_null_pointer(JNIEnv* env, const char* message) {
  jclass cls = (*env)->FindClass(env, "java/lang/NullPointerException");
  if (cls != NULL) (*env)->ThrowNew(env, cls, message);
}

void attnkit_java_bytes_acquire(JNIEnv* env, jbyteArray array, attnkit_java_array* out) {
  memset(out, 0, sizeof(*out));
  if (array == NULL || (*env)->ExceptionCheck(env)) return;
  out->elements = (*env)->GetByteArrayElements(env, array, NULL);
  if (out->elements == NULL) return; /* OutOfMemoryError pending */
  out->array = array;
  out->length = (size_t)(*env)->GetArrayLength(env, array);
  out->kind = 1;
}

void attnkit_java_longs_acquire(JNIEnv* env, jlongArray array, attnkit_java_array* out) {
  memset(out, 0, sizeof(*out));
  if (array == NULL || (*env)->ExceptionCheck(env)) return;
  out->elements = (*env)->GetLongArrayElements(env, array, NULL);
  if (out->elements == NULL) return;
  out->array = array;
  out->length = (size_t)(*env)->GetArrayLength(env, array);
  out->kind = 2;
}

void attnkit_java_array_release(JNIEnv* env, attnkit_java_array* array) {
  /* Inputs only: JNI_ABORT frees the copy (if any) without writing it back. */
  if (array->kind == 1) {
    (*env)->ReleaseByteArrayElements(env, (jbyteArray)array->array, array->elements, JNI_ABORT);
  } else if (array->kind == 2) {
    (*env)->ReleaseLongArrayElements(env, (jlongArray)array->array, array->elements, JNI_ABORT);
  }
  array->kind = 0;
}

/* Field ids of dev.attnkit.Tensor, looked up once (they stay valid while the class is loaded). */
typedef struct {
  jfieldID storage_kind, storage, byte_offset, dtype_code, dtype_bits, shape, strides, read_only;
} tensor_fields;

static int tensor_fields_get(JNIEnv* env, jobject tensor, tensor_fields* fields) {
  static tensor_fields cached;
  static volatile int ready = 0;
  if (ready) {
    *fields = cached;
    return 1;
  }
  jclass cls = (*env)->GetObjectClass(env, tensor);
  tensor_fields f;
  if (!(f.storage_kind = (*env)->GetFieldID(env, cls, "storageKind", "I")) ||
      !(f.storage = (*env)->GetFieldID(env, cls, "storage", "Ljava/lang/Object;")) ||
      !(f.byte_offset = (*env)->GetFieldID(env, cls, "byteOffset", "J")) ||
      !(f.dtype_code = (*env)->GetFieldID(env, cls, "dtypeCode", "I")) ||
      !(f.dtype_bits = (*env)->GetFieldID(env, cls, "dtypeBits", "I")) ||
      !(f.shape = (*env)->GetFieldID(env, cls, "shape", "[J")) ||
      !(f.strides = (*env)->GetFieldID(env, cls, "strides", "[J")) ||
      !(f.read_only = (*env)->GetFieldID(env, cls, "readOnly", "Z"))) {
    (*env)->DeleteLocalRef(env, cls);
    return 0; /* NoSuchFieldError pending */
  }
  (*env)->DeleteLocalRef(env, cls);
  cached = f;
  ready = 1; /* a race only computes the same ids twice */
  *fields = f;
  return 1;
}

void attnkit_java_tensor_acquire(JNIEnv* env, jobject tensor, int is_output,
                                 attnkit_java_tensor* out) {
  memset(out, 0, sizeof(*out));
  out->is_output = is_output;
  if (tensor == NULL || (*env)->ExceptionCheck(env)) return; /* NULL: the C ABI names it */
  tensor_fields fields;
  if (!tensor_fields_get(env, tensor, &fields)) return;
  if (is_output && (*env)->GetBooleanField(env, tensor, fields.read_only)) {
    attnkit_java_throw(env, ATTNKIT_INVALID_ARGUMENT,
                       "an output tensor is over a read-only buffer");
    return;
  }
  attnkit_swig_tensor_desc* desc = &out->desc;
  jlongArray shape = (jlongArray)(*env)->GetObjectField(env, tensor, fields.shape);
  jlongArray strides = (jlongArray)(*env)->GetObjectField(env, tensor, fields.strides);
  const jsize ndim = shape ? (*env)->GetArrayLength(env, shape) : 0;
  if (ndim > ATTNKIT_SWIG_MAX_DIMS || (strides && (*env)->GetArrayLength(env, strides) != ndim)) {
    attnkit_java_throw(env, ATTNKIT_INVALID_ARGUMENT,
                       "tensor rank above 8 or strides of another rank");
    return;
  }
  desc->ndim = ndim;
  if (ndim > 0) (*env)->GetLongArrayRegion(env, shape, 0, ndim, (jlong*)desc->shape);
  if (strides) {
    desc->has_strides = 1;
    if (ndim > 0) (*env)->GetLongArrayRegion(env, strides, 0, ndim, (jlong*)desc->strides);
  }
  desc->byte_offset = (uint64_t)(*env)->GetLongField(env, tensor, fields.byte_offset);
  desc->device_type = 1; /* kDLCPU: the JVM's memory */
  desc->dtype_code = (uint8_t)(*env)->GetIntField(env, tensor, fields.dtype_code);
  desc->dtype_bits = (uint8_t)(*env)->GetIntField(env, tensor, fields.dtype_bits);
  desc->dtype_lanes = 1;

  jobject storage = (*env)->GetObjectField(env, tensor, fields.storage);
  switch ((*env)->GetIntField(env, tensor, fields.storage_kind)) {
    case kStorageDirect:
      desc->data = (*env)->GetDirectBufferAddress(env, storage);
      if (desc->data == NULL) {
        throw_null_pointer(env, "tensor buffer is not a direct buffer");
        return;
      }
      break;
    case kStorageFloats:
      out->elements = (*env)->GetFloatArrayElements(env, (jfloatArray)storage, NULL);
      if (out->elements == NULL) return;
      out->array = (jarray)storage;
      out->array_kind = kStorageFloats;
      desc->data = out->elements;
      break;
    case kStorageBytes:
      out->elements = (*env)->GetByteArrayElements(env, (jbyteArray)storage, NULL);
      if (out->elements == NULL) return;
      out->array = (jarray)storage;
      out->array_kind = kStorageBytes;
      desc->data = out->elements;
      break;
    default:
      throw_null_pointer(env, "tensor without storage");
      return;
  }
  out->tensor = attnkit_swig_tensor_from_desc(desc, &out->storage);
}

void attnkit_java_tensor_release(JNIEnv* env, attnkit_java_tensor* tensor) {
  if (tensor->array_kind == 0) return;
  /* Outputs are copied back only when the call succeeded: a failed call leaves arrays untouched. */
  const jint mode = (tensor->is_output && !(*env)->ExceptionCheck(env)) ? 0 : JNI_ABORT;
  if (tensor->array_kind == kStorageFloats) {
    (*env)->ReleaseFloatArrayElements(env, (jfloatArray)tensor->array, tensor->elements, mode);
  } else {
    (*env)->ReleaseByteArrayElements(env, (jbyteArray)tensor->array, tensor->elements, mode);
  }
  tensor->array_kind = 0;
}

void attnkit_java_set_long(JNIEnv* env, jlongArray holder, jlong value) {
  if (holder == NULL || (*env)->ExceptionCheck(env)) return;
  if ((*env)->GetArrayLength(env, holder) < 1) return;
  (*env)->SetLongArrayRegion(env, holder, 0, 1, &value);
}

static void set_holder(JNIEnv* env, jobjectArray holder, jobject value) {
  if (holder != NULL && (*env)->GetArrayLength(env, holder) >= 1) {
    (*env)->SetObjectArrayElement(env, holder, 0, value);
  }
}

void attnkit_java_take_buffer(JNIEnv* env, jobjectArray holder, attnkit_buffer* buffer) {
  if (buffer != NULL && holder != NULL && !(*env)->ExceptionCheck(env)) {
    jbyteArray bytes = (*env)->NewByteArray(env, (jsize)buffer->size);
    if (bytes != NULL) {
      (*env)->SetByteArrayRegion(env, bytes, 0, (jsize)buffer->size, (const jbyte*)buffer->data);
      set_holder(env, holder, bytes);
      (*env)->DeleteLocalRef(env, bytes);
    }
  }
  attnkit_buffer_free(buffer);
}

void attnkit_java_take_int64_array(JNIEnv* env, jobjectArray holder, attnkit_int64_array* array) {
  if (array != NULL && holder != NULL && !(*env)->ExceptionCheck(env)) {
    jlongArray values = (*env)->NewLongArray(env, (jsize)array->size);
    if (values != NULL) {
      (*env)->SetLongArrayRegion(env, values, 0, (jsize)array->size, (const jlong*)array->data);
      set_holder(env, holder, values);
      (*env)->DeleteLocalRef(env, values);
    }
  }
  attnkit_int64_array_free(array);
}

jlongArray attnkit_java_copy_int64s(JNIEnv* env, jlong address, jlong count) {
  if (count < 0 || (count > 0 && address == 0)) {
    attnkit_java_throw(env, ATTNKIT_INVALID_ARGUMENT, "copy_int64s: bad address or count");
    return NULL;
  }
  jlongArray values = (*env)->NewLongArray(env, (jsize)count);
  if (values != NULL && count > 0) {
    (*env)->SetLongArrayRegion(env, values, 0, (jsize)count,
                               (const jlong*)(const int64_t*)(intptr_t)address);
  }
  return values;
}

jlong attnkit_java_tensor_data_address(const DLTensor* tensor) {
  if (tensor == NULL || tensor->data == NULL) return 0;
  return (jlong)((intptr_t)tensor->data + (intptr_t)tensor->byte_offset);
}

jlong attnkit_java_direct_buffer_address(JNIEnv* env, jobject buffer) {
  if (buffer == NULL) return 0;
  return (jlong)(intptr_t)(*env)->GetDirectBufferAddress(env, buffer);
}
