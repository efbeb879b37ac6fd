/* The Java module: SWIG generates dev.attnkit.internal.AttnKitNative (+ its JNI class, constants and
 * enums) and libattnkit_java, over the shared ../attnkit.i. This file defines the Java side of its
 * typemap contracts; dev.attnkit (bindings/java/src) is the public, hand-written layer over it.
 *
 * JNI rules kept by every typemap here (see attnkit_java_support.h): no typemap returns early from
 * a wrapper; a failure leaves a Java exception pending, %exception then skips the C call, and the
 * freearg typemaps release every borrowed array. A non-NULL attnkit_status* becomes a pending
 * dev.attnkit.AttnKitException after the call; library-owned results are freed in every case. */
%module(jniclassname="AttnKitNativeJNI") AttnKitNative

%{
#include "attnkit_java_support.h"
%}

/* Generated classes are an implementation detail of dev.attnkit: the JNI class is package-private;
 * the module class is public only because dev.attnkit calls it (dev.attnkit.internal is not API). */
%pragma(java) jniclassclassmodifiers="final class"
%pragma(java) moduleclassmodifiers="public final class"
%pragma(java) modulecode=%{
  private AttnKitNative() {}

  private static byte[] utf8(String text) {
    return text == null ? null : text.getBytes(java.nio.charset.StandardCharsets.UTF_8);
  }
%}
/* Proper Java enums (attnkit_status_code, attnkit_config_kind). */
%include <enums.swg>

/* Compile-time constants (ATTNKIT_ABI_VERSION, enum values): no JNI call at class initialization,
 * so the constant the binding was built for can be read before the library is loaded. */
%javaconst(1);

/* Skip the C call when preparing an argument failed (an exception is pending). */
%exception {
  if (!(*jenv)->ExceptionCheck(jenv)) {
    $action
  }
}

/* Helpers below receive the JNIEnv of the call. */
%typemap(in, numinputs=0) JNIEnv* env %{ $1 = jenv; %}

/* SWIG's OUTPUT typemaps (int64_t* out, double* density), without an early return and without JNI
 * calls while an exception is pending. typemaps.i is included once, so ../attnkit.i's %include
 * and %apply pick these up. */
%include <typemaps.i>
%typemap(in) long long* OUTPUT ($*1_ltype temp = 0), double* OUTPUT ($*1_ltype temp = 0) %{
  if (!$input || (*jenv)->GetArrayLength(jenv, $input) < 1) {
    SWIG_JavaThrowException(jenv, SWIG_JavaIndexOutOfBoundsException, "output array of length >= 1 expected");
  }
  $1 = &temp;
%}
%typemap(argout) long long* OUTPUT %{ attnkit_java_set_long(jenv, $input, (jlong)temp$argnum); %}
%typemap(argout) double* OUTPUT %{
  if ($input && !(*jenv)->ExceptionCheck(jenv) && (*jenv)->GetArrayLength(jenv, $input) >= 1) {
    jdouble value = (jdouble)temp$argnum;
    (*jenv)->SetDoubleArrayRegion(jenv, $input, 0, 1, &value);
  }
%}

/* ---- status: NULL = OK, otherwise a pending AttnKitException (status freed) ---- */
%typemap(jni) attnkit_status* "jint"
%typemap(jtype) attnkit_status* "int"
%typemap(jstype) attnkit_status* "void"
%typemap(out) attnkit_status* %{ $result = attnkit_java_throw_status(jenv, $1); %}
%typemap(javaout) attnkit_status* { $jnicall; }

/* The status accessors take the raw handle. */
%typemap(jni) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "jlong"
%typemap(jtype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "long"
%typemap(jstype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "long"
%typemap(javain) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "$javainput"
%typemap(in) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE %{ $1 = ($1_ltype)(intptr_t)$input; %}

/* ---- opaque objects: raw long handles; dev.attnkit's NativeHandle owns them ---- */
%define ATTNKIT_HANDLE(TYPE)
%typemap(jni) TYPE*, const TYPE* "jlong"
%typemap(jtype) TYPE*, const TYPE* "long"
%typemap(jstype) TYPE*, const TYPE* "long"
%typemap(javain) TYPE*, const TYPE* "$javainput"
%typemap(in) TYPE*, const TYPE* %{ $1 = ($1_ltype)(intptr_t)$input; %}
%typemap(out) TYPE*, const TYPE* %{ $result = (jlong)(intptr_t)$1; %}
%typemap(javaout) TYPE*, const TYPE* { return $jnicall; }
%enddef
/* TYPE** out: a long[1] that receives the new object (only when the call succeeded). */
%define ATTNKIT_HANDLE_OUT(TYPE)
%typemap(jni) TYPE** out "jlongArray"
%typemap(jtype) TYPE** out "long[]"
%typemap(jstype) TYPE** out "long[]"
%typemap(javain) TYPE** out "$javainput"
%typemap(in) TYPE** out ($*1_ltype created = NULL) %{ $1 = &created; %}
%typemap(argout) TYPE** out %{ attnkit_java_set_long(jenv, $input, (jlong)(intptr_t)created$argnum); %}
%enddef

/* ---- borrowed ranges: byte[] / long[] (null allowed), released without copying back ---- */
%define ATTNKIT_JAVA_RANGE(PAIR, JNITYPE, JTYPE, ACQUIRE)
%typemap(jni) PAIR "JNITYPE"
%typemap(jtype) PAIR "JTYPE"
%typemap(jstype) PAIR "JTYPE"
%typemap(javain) PAIR "$javainput"
%typemap(in) PAIR (attnkit_java_array range) %{
  ACQUIRE(jenv, $input, &range);
  $1 = ($1_ltype)range.elements;
  $2 = ($2_ltype)range.length;
%}
%typemap(freearg) PAIR %{ attnkit_java_array_release(jenv, &range$argnum); %}
%enddef
ATTNKIT_JAVA_RANGE((const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE), jbyteArray, byte[], attnkit_java_bytes_acquire)
ATTNKIT_JAVA_RANGE((const int64_t* ATTNKIT_INT64S, size_t ATTNKIT_INT64S_SIZE), jlongArray, long[], attnkit_java_longs_acquire)
ATTNKIT_JAVA_RANGE((const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE), jbyteArray, byte[], attnkit_java_bytes_acquire)
/* Text: a String, crossing as UTF-8 bytes. */
%typemap(jstype) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "String"
%typemap(javain) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "utf8($javainput)"

/* ---- library-owned results: copied into holder[0] (byte[][1], long[][1]), then freed ---- */
%define ATTNKIT_JAVA_OWNED_OUT(TYPE, JTYPE, TAKE)
%typemap(jni) TYPE** ATTNKIT_OWNED "jobjectArray"
%typemap(jtype) TYPE** ATTNKIT_OWNED "JTYPE[]"
%typemap(jstype) TYPE** ATTNKIT_OWNED "JTYPE[]"
%typemap(javain) TYPE** ATTNKIT_OWNED "$javainput"
%typemap(in) TYPE** ATTNKIT_OWNED (TYPE* owned = NULL) %{ $1 = &owned; %}
%typemap(argout) TYPE** ATTNKIT_OWNED %{ TAKE(jenv, $input, owned$argnum); %}
%enddef
ATTNKIT_JAVA_OWNED_OUT(attnkit_buffer, byte[], attnkit_java_take_buffer)
ATTNKIT_JAVA_OWNED_OUT(attnkit_int64_array, long[], attnkit_java_take_int64_array)
%apply attnkit_buffer** ATTNKIT_OWNED { attnkit_buffer** ATTNKIT_BUFFER_OUT };
%apply attnkit_int64_array** ATTNKIT_OWNED { attnkit_int64_array** ATTNKIT_INT64_ARRAY_OUT };

/* A pointer into a library-owned object, as a long address: AttnKitNative.attnkit_java_copy_int64s
 * copies it out before the owner is freed. */
%typemap(jni) const int64_t* ATTNKIT_BORROWED_INT64S "jlong"
%typemap(jtype) const int64_t* ATTNKIT_BORROWED_INT64S "long"
%typemap(jstype) const int64_t* ATTNKIT_BORROWED_INT64S "long"
%typemap(out) const int64_t* ATTNKIT_BORROWED_INT64S %{ $result = (jlong)(intptr_t)$1; %}
%typemap(javaout) const int64_t* ATTNKIT_BORROWED_INT64S { return $jnicall; }

/* size_t* size: a long[1]. */
%typemap(jni) size_t* ATTNKIT_SIZE_OUT "jlongArray"
%typemap(jtype) size_t* ATTNKIT_SIZE_OUT "long[]"
%typemap(jstype) size_t* ATTNKIT_SIZE_OUT "long[]"
%typemap(javain) size_t* ATTNKIT_SIZE_OUT "$javainput"
%typemap(in) size_t* ATTNKIT_SIZE_OUT (size_t count = 0) %{ $1 = &count; %}
%typemap(argout) size_t* ATTNKIT_SIZE_OUT %{ attnkit_java_set_long(jenv, $input, (jlong)count$argnum); %}

/* ---- tensors: a dev.attnkit.Tensor, seen as a DLTensor for the call ---- */
%typemap(jni) const DLTensor*, DLTensor* "jobject"
%typemap(jtype) const DLTensor*, DLTensor* "dev.attnkit.Tensor"
%typemap(jstype) const DLTensor*, DLTensor* "dev.attnkit.Tensor"
%typemap(javain) const DLTensor*, DLTensor* "$javainput"
%typemap(in) const DLTensor* (attnkit_java_tensor view) %{
  attnkit_java_tensor_acquire(jenv, $input, 0, &view);
  $1 = view.tensor;
%}
%typemap(in) DLTensor* (attnkit_java_tensor view) %{
  attnkit_java_tensor_acquire(jenv, $input, 1, &view);
  $1 = view.tensor;
%}
%typemap(freearg) const DLTensor*, DLTensor* %{ attnkit_java_tensor_release(jenv, &view$argnum); %}

%include "attnkit.i"

/* ---- Java-only helpers (attnkit_java_support.h), exposed past the allow-list ---- */
ATTNKIT_EXPOSE(attnkit_java_copy_int64s)
ATTNKIT_EXPOSE(attnkit_java_tensor_data_address)
ATTNKIT_EXPOSE(attnkit_java_direct_buffer_address)
jlongArray attnkit_java_copy_int64s(JNIEnv* env, jlong address, jlong count);
jlong attnkit_java_tensor_data_address(const DLTensor* tensor);
jlong attnkit_java_direct_buffer_address(JNIEnv* env, jobject buffer);
