/* Python objects -> the C ABI's arguments: DLTensor views (DLPack or the buffer protocol, no
 * copies), config views, int64 lists; and int64 results back. */
#include <string.h>

#include "attnkit_py.h"

void akpy_tensor_release(TensorArg* arg) {
  if (arg->managed != NULL) {
    if (arg->managed->deleter != NULL) arg->managed->deleter(arg->managed);
    arg->managed = NULL;
  }
  Py_CLEAR(arg->capsule);
  if (arg->has_view) {
    PyBuffer_Release(&arg->view);
    arg->has_view = 0;
  }
}

const DLTensor* akpy_tensor_ptr(const TensorArg* arg) { return arg->present ? &arg->tensor : NULL; }

/* The DLPack dtype of a struct-module format ("f", "<e", ...); 0 when unsupported. */
static int dtype_from_format(const char* format, Py_ssize_t itemsize, DLDataType* out) {
  if (format == NULL) format = "B";
  if (*format == '@' || *format == '=' || *format == '<') {
#if PY_BIG_ENDIAN
    if (*format == '<') return 0;
#endif
    ++format;
  }
  if (format[0] == '\0' || format[1] != '\0') return 0;
  out->lanes = 1;
  out->bits = (uint8_t)(itemsize * 8);
  switch (format[0]) {
    case 'e':
    case 'f':
    case 'd':
      out->code = kDLFloat;
      break;
    case 'b':
    case 'h':
    case 'i':
    case 'l':
    case 'q':
    case 'n':
      out->code = kDLInt;
      break;
    case 'B':
    case 'H':
    case 'I':
    case 'L':
    case 'Q':
    case 'N':
    case '?':
      out->code = kDLUInt;
      break;
    default:
      return 0;
  }
  return 1;
}

static int tensor_from_buffer(TensorArg* arg, PyObject* obj, int writable) {
  int flags = writable ? PyBUF_RECORDS : PyBUF_RECORDS_RO;
  if (PyObject_GetBuffer(obj, &arg->view, flags) != 0) {
    /* Exporters differ in what they raise for read-only memory (numpy: ValueError). */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (writable && PyObject_GetBuffer(obj, &arg->view, PyBUF_RECORDS_RO) == 0) {
      PyBuffer_Release(&arg->view);
      Py_XDECREF(type);
      Py_XDECREF(value);
      Py_XDECREF(traceback);
      akpy_raise_invalid_argument("%s: must be writable (it receives the result)", arg->name);
      return -1;
    }
    PyErr_Clear();
    PyErr_Restore(type, value, traceback);
    if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Clear();
      PyErr_Format(
          PyExc_TypeError,
          "%s: expected a tensor (an object with __dlpack__ or the buffer protocol), got %s",
          arg->name, Py_TYPE(obj)->tp_name);
    }
    return -1;
  }
  arg->has_view = 1;
  Py_buffer* v = &arg->view;
  if (v->ndim > ATTNKIT_PY_MAX_RANK) {
    akpy_raise_invalid_argument("%s: rank %d is above %d", arg->name, v->ndim, ATTNKIT_PY_MAX_RANK);
    return -1;
  }
  DLDataType dtype;
  if (!dtype_from_format(v->format, v->itemsize, &dtype)) {
    akpy_raise_invalid_argument("%s: unsupported element format '%s'", arg->name,
                                v->format ? v->format : "B");
    return -1;
  }
  for (int i = 0; i < v->ndim; ++i) {
    if (v->strides[i] % v->itemsize != 0) {
      akpy_raise_invalid_argument(
          "%s: stride %zd bytes in dimension %d is not a multiple of the %zd-byte "
          "element",
          arg->name, v->strides[i], i, v->itemsize);
      return -1;
    }
    arg->shape[i] = v->shape[i];
    arg->strides[i] = v->strides[i] / v->itemsize;
  }
  memset(&arg->tensor, 0, sizeof(arg->tensor));
  arg->tensor.data = v->buf;
  arg->tensor.device.device_type = kDLCPU;
  arg->tensor.device.device_id = 0;
  arg->tensor.ndim = v->ndim;
  arg->tensor.dtype = dtype;
  arg->tensor.shape = arg->shape;
  arg->tensor.strides = arg->strides;
  arg->tensor.byte_offset = 0;
  return 0;
}

int akpy_tensor_from_object(TensorArg* arg, PyObject* obj, const char* name, int writable,
                            int optional) {
  memset(arg, 0, sizeof(*arg));
  arg->name = name;
  if (obj == Py_None) {
    if (optional) return 0;
    PyErr_Format(PyExc_TypeError, "%s: expected a tensor, got None", name);
    return -1;
  }
  arg->present = 1;
  PyObject* method = PyObject_GetAttrString(obj, "__dlpack__");
  if (method == NULL) {
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
    PyErr_Clear();
  } else {
    PyObject* capsule = PyObject_CallNoArgs(method);
    Py_DECREF(method);
    if (capsule == NULL) {
      if (!PyErr_ExceptionMatches(PyExc_BufferError)) return -1;
      PyErr_Clear();
      return tensor_from_buffer(arg, obj, writable);
    }
    if (!PyCapsule_IsValid(capsule, "dltensor")) {
      Py_DECREF(capsule);
      PyErr_Format(PyExc_TypeError,
                   "%s: %s.__dlpack__() did not return an unused \"dltensor\" capsule", name,
                   Py_TYPE(obj)->tp_name);
      return -1;
    }
    DLManagedTensor* managed = (DLManagedTensor*)PyCapsule_GetPointer(capsule, "dltensor");
    if (managed == NULL || PyCapsule_SetName(capsule, "used_dltensor") != 0) {
      Py_DECREF(capsule);
      return -1;
    }
    arg->capsule = capsule;
    arg->managed = managed;
    arg->tensor = managed->dl_tensor;
    return 0;
  }
  return tensor_from_buffer(arg, obj, writable);
}

int akpy_config_from_object(ConfigArg* arg, PyObject* obj) {
  memset(arg, 0, sizeof(*arg));
  if (PyUnicode_Check(obj)) {
    arg->is_text = 1;
    arg->data = PyUnicode_AsUTF8AndSize(obj, &arg->size);
    return arg->data == NULL ? -1 : 0;
  }
  if (PyObject_GetBuffer(obj, &arg->view, PyBUF_SIMPLE) != 0) {
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError,
                 "config: expected bytes (serialized proto) or str (textproto), got %s",
                 Py_TYPE(obj)->tp_name);
    return -1;
  }
  arg->has_view = 1;
  arg->data = (const char*)arg->view.buf;
  arg->size = arg->view.len;
  return 0;
}

void akpy_config_release(ConfigArg* arg) {
  if (arg->has_view) PyBuffer_Release(&arg->view);
  arg->has_view = 0;
}

PyObject* akpy_int64_bytes(const int64_t* data, size_t size) {
  return PyByteArray_FromStringAndSize((const char*)data, (Py_ssize_t)(size * sizeof(int64_t)));
}

int akpy_int64_list(PyObject* obj, const char* error, int64_t** out, size_t* size) {
  *out = NULL;
  *size = 0;
  if (obj == Py_None) return 0;
  PyObject* seq = PySequence_Fast(obj, error);
  if (seq == NULL) return -1;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  int64_t* values = PyMem_Malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  if (values == NULL) {
    Py_DECREF(seq);
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    values[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
    if (values[i] == -1 && PyErr_Occurred()) {
      PyMem_Free(values);
      Py_DECREF(seq);
      return -1;
    }
  }
  Py_DECREF(seq);
  *out = values;
  *size = (size_t)n;
  return 0;
}

int akpy_tensors_from_objects(TensorArg* args, PyObject* const* objs, const TensorSpec* specs,
                              size_t count) {
  memset(args, 0, sizeof(*args) * count);
  for (size_t i = 0; i < count; ++i) {
    if (akpy_tensor_from_object(&args[i], objs[i], specs[i].name, specs[i].writable,
                                specs[i].optional) != 0) {
      return -1;
    }
  }
  return 0;
}

void akpy_tensors_release(TensorArg* args, size_t count) {
  for (size_t i = 0; i < count; ++i) akpy_tensor_release(&args[i]);
}
