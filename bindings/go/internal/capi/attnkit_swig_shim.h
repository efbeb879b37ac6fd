/* Helpers for the SWIG wrappers of every language (compiled into each wrapper library, never into
 * libattnkit). They turn flat, fixed-layout structs that any foreign-function layer can fill
 * (C# blittable structs, Java direct buffers, Go cgo values) into the pointer-heavy argument shapes
 * of the C ABI, so the language typemaps stay one line each. */
#ifndef ATTNKIT_BINDINGS_SWIG_ATTNKIT_SWIG_SHIM_H_
#define ATTNKIT_BINDINGS_SWIG_ATTNKIT_SWIG_SHIM_H_

#include <stddef.h>
#include <stdint.h>

#include "attnkit/attnkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A borrowed byte range: the (const void* data, size_t size) pairs of the C ABI (config bytes,
 * textproto, masks). */
typedef struct attnkit_swig_bytes {
  const void* data;
  size_t size;
} attnkit_swig_bytes;

/* A borrowed int64 range: the (const int64_t* values, size_t count) pairs of the C ABI. */
typedef struct attnkit_swig_int64s {
  const int64_t* data;
  size_t size;
} attnkit_swig_int64s;

/* Most dimensions a tensor passed through a binding may have (the C ABI uses rank 4 at most). */
#define ATTNKIT_SWIG_MAX_DIMS 8

/* A DLTensor with its shape and strides stored inline: fixed layout (168 bytes, no padding
 * surprises), so a binding fills it without allocating. `data` is borrowed for the call. */
typedef struct attnkit_swig_tensor_desc {
  void* data;
  uint64_t byte_offset;
  int32_t device_type; /* DLDeviceType: 1 CPU, 2 CUDA */
  int32_t device_id;
  uint8_t dtype_code; /* DLDataTypeCode: 0 int, 1 uint, 2 float, 4 bfloat */
  uint8_t dtype_bits;
  uint16_t dtype_lanes; /* 0 is read as 1 */
  int32_t ndim;
  int32_t has_strides; /* 0: compact row-major (DLTensor.strides NULL) */
  int32_t reserved;
  int64_t shape[ATTNKIT_SWIG_MAX_DIMS];
  int64_t strides[ATTNKIT_SWIG_MAX_DIMS]; /* in elements, as DLPack */
} attnkit_swig_tensor_desc;

/* Points `storage` at `desc` (shape and strides alias desc's arrays, so `desc` must outlive the
 * use) and returns it; returns NULL for a NULL desc, which the C ABI reports as a NULL tensor.
 * An ndim outside [0, ATTNKIT_SWIG_MAX_DIMS] is clamped to an invalid -1 rank the ABI rejects. */
DLTensor* attnkit_swig_tensor_from_desc(const attnkit_swig_tensor_desc* desc, DLTensor* storage);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_BINDINGS_SWIG_ATTNKIT_SWIG_SHIM_H_ */
