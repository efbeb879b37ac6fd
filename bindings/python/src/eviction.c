/* attnkit._attnkit.EvictionPolicy over attnkit_eviction_policy (one thread at a time: the wrapper
 * has a lock). */
#include "attnkit_py.h"

static void eviction_free(void* p) { attnkit_eviction_policy_free((attnkit_eviction_policy*)p); }

static attnkit_eviction_policy* policy_of(Handle* self) {
  return (attnkit_eviction_policy*)self->handle;
}

static PyObject* eviction_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  static char* keywords[] = {"config", "num_layers", "num_heads", "num_kv_heads", NULL};
  PyObject* config_obj;
  int num_layers, num_heads, num_kv_heads;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oiii:EvictionPolicy", keywords, &config_obj,
                                   &num_layers, &num_heads, &num_kv_heads)) {
    return NULL;
  }
  ConfigArg config;
  if (akpy_config_from_object(&config, config_obj) != 0) return NULL;
  Handle* self = akpy_handle_alloc(type, "EvictionPolicy", eviction_free, 1);
  if (self == NULL) {
    akpy_config_release(&config);
    return NULL;
  }
  attnkit_eviction_policy* policy = NULL;
  attnkit_status* status;
  Py_BEGIN_ALLOW_THREADS status =
      config.is_text
          ? attnkit_eviction_policy_create_from_text(config.data, (size_t)config.size, num_layers,
                                                     num_heads, num_kv_heads, &policy)
          : attnkit_eviction_policy_create(config.data, (size_t)config.size, num_layers, num_heads,
                                           num_kv_heads, &policy);
  Py_END_ALLOW_THREADS akpy_config_release(&config);
  if (status != NULL) {
    Py_DECREF(self);
    return akpy_raise_status(status);
  }
  self->handle = policy;
  return (PyObject*)self;
}

static PyObject* eviction_observe(Handle* self, PyObject* args) {
  static const TensorSpec spec = {"attention", 0, 0};
  int layer;
  PyObject *attention_obj, *lengths_obj = Py_None;
  if (!PyArg_ParseTuple(args, "iO|O:observe", &layer, &attention_obj, &lengths_obj)) return NULL;
  int64_t* lengths = NULL;
  size_t num_lengths = 0;
  if (akpy_int64_list(lengths_obj, "lengths: expected a sequence of ints", &lengths,
                      &num_lengths) != 0) {
    return NULL;
  }
  TensorArg attention;
  int rc = akpy_tensors_from_objects(&attention, &attention_obj, &spec, 1);
  if (rc == 0) {
    ATTNKIT_PY_RUN(rc, self,
                   attnkit_eviction_policy_observe(policy_of(self), layer, &attention.tensor,
                                                   lengths, num_lengths));
  }
  akpy_tensor_release(&attention);
  PyMem_Free(lengths);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

/* The kept positions as a list of bytearrays of int64, one per row; frees `kept`. */
static PyObject* kept_rows(attnkit_kept_positions* kept) {
  size_t rows = attnkit_kept_positions_num_rows(kept);
  PyObject* result = PyList_New((Py_ssize_t)rows);
  for (size_t r = 0; result != NULL && r < rows; ++r) {
    size_t size = 0;
    const int64_t* row = attnkit_kept_positions_row(kept, r, &size);
    PyObject* item = akpy_int64_bytes(row, size);
    if (item == NULL) {
      Py_CLEAR(result);
    } else {
      PyList_SET_ITEM(result, (Py_ssize_t)r, item);
    }
  }
  attnkit_kept_positions_free(kept);
  return result;
}

static PyObject* eviction_select(Handle* self, PyObject* args) {
  static const TensorSpec spec = {"keys", 0, 1};
  int layer;
  PyObject *keys_obj, *lengths_obj;
  if (!PyArg_ParseTuple(args, "iOO:select", &layer, &keys_obj, &lengths_obj)) return NULL;
  int64_t* lengths = NULL;
  size_t num_lengths = 0;
  if (akpy_int64_list(lengths_obj, "lengths: expected a sequence of ints", &lengths,
                      &num_lengths) != 0) {
    return NULL;
  }
  TensorArg keys;
  attnkit_kept_positions* kept = NULL;
  int rc = akpy_tensors_from_objects(&keys, &keys_obj, &spec, 1);
  if (rc == 0) {
    ATTNKIT_PY_RUN(rc, self,
                   attnkit_eviction_policy_select(policy_of(self), layer, akpy_tensor_ptr(&keys),
                                                  lengths, num_lengths, &kept));
  }
  akpy_tensor_release(&keys);
  PyMem_Free(lengths);
  return rc != 0 ? NULL : kept_rows(kept);
}

/* needs_keys() and per_head(): a flag of the open policy. */
static PyObject* eviction_flag(Handle* self, int32_t (*flag)(const attnkit_eviction_policy*)) {
  if (akpy_handle_begin(self) != 0) return NULL;
  int32_t value;
  ATTNKIT_PY_CALL(self, value = flag(policy_of(self)));
  akpy_handle_end(self);
  return PyBool_FromLong(value);
}

static PyObject* eviction_needs_keys(Handle* self, PyObject* unused) {
  return eviction_flag(self, attnkit_eviction_policy_needs_keys);
}

static PyObject* eviction_per_head(Handle* self, PyObject* unused) {
  return eviction_flag(self, attnkit_eviction_policy_per_head);
}

static PyObject* eviction_layer_budget(Handle* self, PyObject* args) {
  int layer;
  if (!PyArg_ParseTuple(args, "i:layer_budget", &layer)) return NULL;
  int64_t budget = 0;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_eviction_policy_layer_budget(policy_of(self), layer, &budget));
  return rc != 0 ? NULL : PyLong_FromLongLong(budget);
}

static PyObject* eviction_reset(Handle* self, PyObject* unused) {
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_eviction_policy_reset(policy_of(self)));
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyMethodDef eviction_methods[] = {
    {"observe", (PyCFunction)eviction_observe, METH_VARARGS,
     "observe(layer, attention, lengths=None): adds one step's attention weights."},
    {"select", (PyCFunction)eviction_select, METH_VARARGS,
     "select(layer, keys_or_None, lengths) -> list of bytearrays of int64 kept positions per row."},
    {"needs_keys", (PyCFunction)eviction_needs_keys, METH_NOARGS, "Whether select needs keys."},
    {"per_head", (PyCFunction)eviction_per_head, METH_NOARGS, "Whether kv heads keep their own."},
    {"layer_budget", (PyCFunction)eviction_layer_budget, METH_VARARGS,
     "layer_budget(layer) -> tokens per kv head after an eviction."},
    {"reset", (PyCFunction)eviction_reset, METH_NOARGS, "Forgets every layer's scores."},
    {"close", (PyCFunction)akpy_handle_close, METH_NOARGS, "Frees the policy; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(akpy_EvictionPolicyType, "EvictionPolicy",
                       "EvictionPolicy(config, num_layers, num_heads, num_kv_heads).",
                       eviction_methods, eviction_new);
