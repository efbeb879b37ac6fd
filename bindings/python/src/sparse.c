/* attnkit._attnkit.SparseAttention over attnkit_sparse_attention (thread-safe C object: no lock).
 */
#include "attnkit_py.h"

static void sparse_free(void* p) { attnkit_sparse_attention_free((attnkit_sparse_attention*)p); }

static attnkit_status* sparse_create_from_config(const ConfigArg* config, void** out) {
  attnkit_sparse_attention* object = NULL;
  attnkit_status* status =
      config->is_text
          ? attnkit_sparse_attention_create_from_text(config->data, (size_t)config->size, &object)
          : attnkit_sparse_attention_create(config->data, (size_t)config->size, &object);
  *out = object;
  return status;
}

static PyObject* sparse_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  return akpy_handle_new_from_config(type, args, kwargs, "SparseAttention", sparse_free, 0,
                                     sparse_create_from_config);
}

static const attnkit_sparse_attention* sparse_of(Handle* self) {
  return (const attnkit_sparse_attention*)self->handle;
}

static PyObject* sparse_mask_shape(Handle* self, PyObject* args) {
  long long num_heads, q_len, k_len;
  if (!PyArg_ParseTuple(args, "LLL:mask_shape", &num_heads, &q_len, &k_len)) return NULL;
  int64_t heads = 0, q_blocks = 0, k_blocks = 0;
  int rc;
  ATTNKIT_PY_RUN(rc, self,
                 attnkit_sparse_attention_mask_shape(sparse_of(self), num_heads, q_len, k_len,
                                                     &heads, &q_blocks, &k_blocks));
  if (rc != 0) return NULL;
  return Py_BuildValue("(LLL)", (long long)heads, (long long)q_blocks, (long long)k_blocks);
}

static PyObject* sparse_build_mask(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {{"q", 0, 0}, {"k", 0, 0}, {"mask_out", 1, 0}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  PyObject* objs[kCount];
  if (!PyArg_ParseTuple(args, "OOO:build_mask", &objs[0], &objs[1], &objs[2])) return NULL;
  TensorArg t[kCount];
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(rc, self,
                   attnkit_sparse_attention_build_mask(sparse_of(self), &t[0].tensor, &t[1].tensor,
                                                       &t[2].tensor));
  }
  akpy_tensors_release(t, kCount);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* sparse_attention(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {
      {"q", 0, 0}, {"k", 0, 0}, {"v", 0, 0}, {"mask", 0, 0}, {"out", 1, 0}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  PyObject* objs[kCount];
  double scale;
  if (!PyArg_ParseTuple(args, "OOOOdO:attention", &objs[0], &objs[1], &objs[2], &objs[3], &scale,
                        &objs[4])) {
    return NULL;
  }
  TensorArg t[kCount];
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(
        rc, self,
        attnkit_sparse_attention_attention(sparse_of(self), &t[0].tensor, &t[1].tensor,
                                           &t[2].tensor, &t[3].tensor, scale, &t[4].tensor));
  }
  akpy_tensors_release(t, kCount);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* sparse_prefill(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {{"q", 0, 0}, {"k", 0, 0}, {"v", 0, 0}, {"out", 1, 0}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  PyObject* objs[kCount];
  double scale;
  if (!PyArg_ParseTuple(args, "OOOdO:prefill", &objs[0], &objs[1], &objs[2], &scale, &objs[3])) {
    return NULL;
  }
  TensorArg t[kCount];
  double density = 0.0;
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(rc, self,
                   attnkit_sparse_attention_prefill(sparse_of(self), &t[0].tensor, &t[1].tensor,
                                                    &t[2].tensor, scale, &t[3].tensor, &density));
  }
  akpy_tensors_release(t, kCount);
  return rc != 0 ? NULL : PyFloat_FromDouble(density);
}

static PyMethodDef sparse_methods[] = {
    {"mask_shape", (PyCFunction)sparse_mask_shape, METH_VARARGS,
     "mask_shape(num_heads, q_len, k_len) -> (mask_heads, q_blocks, k_blocks)."},
    {"build_mask", (PyCFunction)sparse_build_mask, METH_VARARGS,
     "build_mask(q, k, mask_out): writes the uint8 block mask."},
    {"attention", (PyCFunction)sparse_attention, METH_VARARGS,
     "attention(q, k, v, mask, scale, out): block-sparse causal attention."},
    {"prefill", (PyCFunction)sparse_prefill, METH_VARARGS,
     "prefill(q, k, v, scale, out) -> density."},
    {"close", (PyCFunction)akpy_handle_close, METH_NOARGS, "Frees the object; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(akpy_SparseAttentionType, "SparseAttention",
                       "SparseAttention(config: bytes | str): attnkit_sparse_attention.",
                       sparse_methods, sparse_new);
