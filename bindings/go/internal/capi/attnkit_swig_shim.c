#include "attnkit_swig_shim.h"

#include <string.h>

/* The layout the language structs mirror (C#: AttnKit.Native.TensorDesc). */
_Static_assert(sizeof(attnkit_swig_tensor_desc) == 168, "attnkit_swig_tensor_desc layout");
_Static_assert(offsetof(attnkit_swig_tensor_desc, dtype_code) == 24, "dtype_code offset");
_Static_assert(offsetof(attnkit_swig_tensor_desc, ndim) == 28, "ndim offset");
_Static_assert(offsetof(attnkit_swig_tensor_desc, shape) == 40, "shape offset");
_Static_assert(offsetof(attnkit_swig_tensor_desc, strides) == 104, "strides offset");
_Static_assert(sizeof(attnkit_swig_bytes) == 2 * sizeof(void*), "attnkit_swig_bytes layout");

DLTensor* attnkit_swig_tensor_from_desc(const attnkit_swig_tensor_desc* desc, DLTensor* storage) {
  if (desc == NULL) return NULL;
  memset(storage, 0, sizeof(*storage));
  storage->data = desc->data;
  storage->byte_offset = desc->byte_offset;
  storage->device.device_type = (DLDeviceType)desc->device_type;
  storage->device.device_id = desc->device_id;
  storage->dtype.code = desc->dtype_code;
  storage->dtype.bits = desc->dtype_bits;
  storage->dtype.lanes = desc->dtype_lanes == 0 ? 1 : desc->dtype_lanes;
  /* DLTensor's shape/strides are non-const by declaration only; the ABI borrows them read-only. */
  storage->ndim = (desc->ndim < 0 || desc->ndim > ATTNKIT_SWIG_MAX_DIMS) ? -1 : desc->ndim;
  storage->shape = (int64_t*)desc->shape;
  storage->strides = desc->has_strides ? (int64_t*)desc->strides : NULL;
  return storage;
}
