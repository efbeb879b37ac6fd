/* attnkit._attnkit, the CPython extension over attnkit's C ABI: the module itself (errors, config
 * functions, tensor checks, the module's init). attnkit_py.h says how the extension is laid out. */
#include <stdarg.h>
#include <string.h>

#include "attnkit_py.h"

/* ------------------------------------------------------------------------------------------------
 * Errors */

/* callable(code: int, message: str) -> exception instance; set by the package at import. */
static PyObject* error_factory = NULL;

PyObject* akpy_raise_code(int code, const char* message) {
  PyObject* text = PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message), "replace");
  if (text == NULL) return NULL;
  if (error_factory != NULL) {
    PyObject* exc = PyObject_CallFunction(error_factory, "iO", code, text);
    if (exc != NULL) {
      PyErr_SetObject((PyObject*)Py_TYPE(exc), exc);
      Py_DECREF(exc);
    }
  } else {
    PyErr_Format(PyExc_RuntimeError, "attnkit error %d: %U", code, text);
  }
  Py_DECREF(text);
  return NULL;
}

PyObject* akpy_raise_status(attnkit_status* status) {
  PyObject* result =
      akpy_raise_code((int)attnkit_status_get_code(status), attnkit_status_get_message(status));
  attnkit_status_free(status);
  return result;
}

PyObject* akpy_raise_invalid_argument(const char* format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  PyOS_vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  return akpy_raise_code(ATTNKIT_INVALID_ARGUMENT, message);
}

static PyObject* set_error_factory(PyObject* module, PyObject* factory) {
  if (factory != Py_None && !PyCallable_Check(factory)) {
    PyErr_SetString(PyExc_TypeError, "set_error_factory: expected a callable or None");
    return NULL;
  }
  Py_XDECREF(error_factory);
  error_factory = factory == Py_None ? NULL : factory;
  Py_XINCREF(error_factory);
  Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------------
 * Module functions */

static PyObject* abi_version(PyObject* module, PyObject* unused) {
  return PyLong_FromLong((long)attnkit_abi_version());
}

static PyObject* version_string(PyObject* module, PyObject* unused) {
  return PyUnicode_FromString(attnkit_version_string());
}

static PyObject* set_num_threads(PyObject* module, PyObject* args) {
  int num_threads;
  if (!PyArg_ParseTuple(args, "i:set_num_threads", &num_threads)) return NULL;
  attnkit_status* status = attnkit_set_num_threads((int32_t)num_threads);
  if (status != NULL) return akpy_raise_status(status);
  Py_RETURN_NONE;
}

static PyObject* get_num_threads(PyObject* module, PyObject* unused) {
  return PyLong_FromLong((long)attnkit_get_num_threads());
}

static int config_kind_check(int kind) {
  if (kind < ATTNKIT_CONFIG_EVICTION || kind > ATTNKIT_CONFIG_SESSION) {
    PyErr_Format(PyExc_ValueError, "unknown config kind %d", kind);
    return -1;
  }
  return 0;
}

static PyObject* config_validate(PyObject* module, PyObject* args) {
  int kind;
  PyObject* config_obj;
  if (!PyArg_ParseTuple(args, "iO:config_validate", &kind, &config_obj)) return NULL;
  if (config_kind_check(kind) != 0) return NULL;
  ConfigArg config;
  if (akpy_config_from_object(&config, config_obj) != 0) return NULL;
  attnkit_status* status;
  Py_BEGIN_ALLOW_THREADS status =
      config.is_text
          ? attnkit_config_validate_text((attnkit_config_kind)kind, config.data,
                                         (size_t)config.size)
          : attnkit_config_validate((attnkit_config_kind)kind, config.data, (size_t)config.size);
  Py_END_ALLOW_THREADS akpy_config_release(&config);
  if (status != NULL) return akpy_raise_status(status);
  Py_RETURN_NONE;
}

static PyObject* config_text_to_binary(PyObject* module, PyObject* args) {
  int kind;
  const char* text;
  Py_ssize_t size;
  if (!PyArg_ParseTuple(args, "is#:config_text_to_binary", &kind, &text, &size)) return NULL;
  if (config_kind_check(kind) != 0) return NULL;
  attnkit_buffer* buffer = NULL;
  attnkit_status* status =
      attnkit_config_text_to_binary((attnkit_config_kind)kind, text, (size_t)size, &buffer);
  if (status != NULL) return akpy_raise_status(status);
  PyObject* result = PyBytes_FromStringAndSize((const char*)buffer->data, (Py_ssize_t)buffer->size);
  attnkit_buffer_free(buffer);
  return result;
}

static PyObject* config_binary_to_text(PyObject* module, PyObject* args) {
  int kind;
  Py_buffer data;
  if (!PyArg_ParseTuple(args, "iy*:config_binary_to_text", &kind, &data)) return NULL;
  if (config_kind_check(kind) != 0) {
    PyBuffer_Release(&data);
    return NULL;
  }
  attnkit_buffer* buffer = NULL;
  attnkit_status* status =
      attnkit_config_binary_to_text((attnkit_config_kind)kind, data.buf, (size_t)data.len, &buffer);
  PyBuffer_Release(&data);
  if (status != NULL) return akpy_raise_status(status);
  PyObject* result =
      PyUnicode_DecodeUTF8((const char*)buffer->data, (Py_ssize_t)buffer->size, "replace");
  attnkit_buffer_free(buffer);
  return result;
}

/* tensor_check(tensor, name, expected_rank=-1, is_output=False): attnkit_tensor_check() on the view
 * the module would pass, so the package can reject a tensor before a call. */
static PyObject* tensor_check(PyObject* module, PyObject* args) {
  PyObject* obj;
  const char* name;
  int rank = -1, is_output = 0;
  if (!PyArg_ParseTuple(args, "Os|ip:tensor_check", &obj, &name, &rank, &is_output)) return NULL;
  TensorArg arg;
  PyObject* result = NULL;
  if (akpy_tensor_from_object(&arg, obj, name, is_output, 0) == 0) {
    attnkit_status* status = attnkit_tensor_check(&arg.tensor, name, rank, is_output);
    result = status != NULL ? akpy_raise_status(status) : Py_NewRef(Py_None);
  }
  akpy_tensor_release(&arg);
  return result;
}

/* describe_tensor(tensor) -> dict: the DLTensor the module hands to the library (data pointer after
 * byte_offset, shape, strides in elements, dtype, device, which protocol). For tests of zero copy.
 */
static PyObject* describe_tensor(PyObject* module, PyObject* obj) {
  TensorArg arg;
  PyObject* result = NULL;
  if (akpy_tensor_from_object(&arg, obj, "tensor", 0, 0) == 0) {
    const DLTensor* t = &arg.tensor;
    PyObject* shape = PyTuple_New(t->ndim);
    PyObject* strides = PyTuple_New(t->ndim);
    for (int i = 0; shape != NULL && strides != NULL && i < t->ndim; ++i) {
      int64_t stride = 1;
      if (t->strides != NULL) {
        stride = t->strides[i];
      } else {
        for (int j = i + 1; j < t->ndim; ++j) stride *= t->shape[j];
      }
      PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(t->shape[i]));
      PyTuple_SET_ITEM(strides, i, PyLong_FromLongLong(stride));
    }
    if (shape != NULL && strides != NULL) {
      result = Py_BuildValue("{s:K,s:O,s:O,s:i,s:i,s:i,s:i,s:s}", "data",
                             (unsigned long long)((uintptr_t)t->data + t->byte_offset), "shape",
                             shape, "strides", strides, "dtype_code", (int)t->dtype.code,
                             "dtype_bits", (int)t->dtype.bits, "device_type",
                             (int)t->device.device_type, "device_id", (int)t->device.device_id,
                             "protocol", arg.managed != NULL ? "dlpack" : "buffer");
    }
    Py_XDECREF(shape);
    Py_XDECREF(strides);
  }
  akpy_tensor_release(&arg);
  return result;
}

static PyMethodDef module_methods[] = {
    {"abi_version", abi_version, METH_NOARGS, "attnkit_abi_version() of the loaded library."},
    {"version_string", version_string, METH_NOARGS, "attnkit_version_string()."},
    {"set_num_threads", set_num_threads, METH_VARARGS,
     "set_num_threads(n): attnkit_set_num_threads() (0: the OpenMP default)."},
    {"get_num_threads", get_num_threads, METH_NOARGS, "attnkit_get_num_threads()."},
    {"set_error_factory", set_error_factory, METH_O,
     "set_error_factory(callable(code, message) -> exception): how statuses are raised."},
    {"config_validate", config_validate, METH_VARARGS,
     "config_validate(kind, bytes | str): raises on an invalid config."},
    {"config_text_to_binary", config_text_to_binary, METH_VARARGS,
     "config_text_to_binary(kind, text) -> bytes (parsed, not validated)."},
    {"config_binary_to_text", config_binary_to_text, METH_VARARGS,
     "config_binary_to_text(kind, data) -> str."},
    {"tensor_check", tensor_check, METH_VARARGS,
     "tensor_check(tensor, name, expected_rank=-1, is_output=False): attnkit_tensor_check()."},
    {"describe_tensor", describe_tensor, METH_O, "The DLTensor view the module passes (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef attnkit_module = {
    PyModuleDef_HEAD_INIT,
    "attnkit._attnkit",
    "attnkit's C ABI for Python; use the package `attnkit`, not this module.",
    -1,
    module_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int add_type(PyObject* module, PyTypeObject* type, const char* name) {
  if (PyType_Ready(type) != 0) return -1;
  Py_INCREF(type);
  if (PyModule_AddObject(module, name, (PyObject*)type) != 0) {
    Py_DECREF(type);
    return -1;
  }
  return 0;
}

PyMODINIT_FUNC PyInit__attnkit(void) {
  PyObject* module = PyModule_Create(&attnkit_module);
  if (module == NULL) return NULL;
  if (PyModule_AddIntConstant(module, "HEADER_ABI_VERSION", ATTNKIT_ABI_VERSION) != 0 ||
      PyModule_AddIntConstant(module, "CONFIG_EVICTION", ATTNKIT_CONFIG_EVICTION) != 0 ||
      PyModule_AddIntConstant(module, "CONFIG_SPARSE_ATTENTION", ATTNKIT_CONFIG_SPARSE_ATTENTION) !=
          0 ||
      PyModule_AddIntConstant(module, "CONFIG_VISUAL_PRUNING", ATTNKIT_CONFIG_VISUAL_PRUNING) !=
          0 ||
      PyModule_AddIntConstant(module, "CONFIG_SESSION", ATTNKIT_CONFIG_SESSION) != 0 ||
      add_type(module, &akpy_SessionType, "Session") != 0 ||
      add_type(module, &akpy_EvictionPolicyType, "EvictionPolicy") != 0 ||
      add_type(module, &akpy_SparseAttentionType, "SparseAttention") != 0 ||
      add_type(module, &akpy_VisualSelectionType, "VisualSelection") != 0 ||
      add_type(module, &akpy_VisualPrunerType, "VisualPruner") != 0) {
    Py_DECREF(module);
    return NULL;
  }
  return module;
}
