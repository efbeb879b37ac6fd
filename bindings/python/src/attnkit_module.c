/* attnkit._attnkit: the CPython extension over attnkit's C ABI (libattnkit only, no C++).
 *
 * The module is deliberately thin: it turns Python objects into the C ABI's arguments (configs as
 * bytes or str, tensors as DLTensor views of objects with __dlpack__ or the buffer protocol,
 * without copies), releases the GIL around every library call, and turns attnkit_status into the
 * exception the pure-Python package registers with set_error_factory(). Everything idiomatic (typed
 * configs, context managers, numpy outputs) lives in the package `attnkit`.
 *
 * Threads: the Session and EvictionPolicy C objects are one-thread-at-a-time, so each wrapper holds
 * a lock that a call takes after releasing the GIL (two Python threads on one object wait for each
 * other instead of racing). SparseAttention, VisualPruner and selections may be used by several
 * threads at once and have no lock. close() while a call of another thread is in flight frees the C
 * object when that call returns. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "attnkit/attnkit.h"

#if defined(__has_include)
#if __has_include("attnkit/attnkit_sparse.h")
#include "attnkit/attnkit_sparse.h"
#define ATTNKIT_PY_HAVE_SPARSE 1
#endif
#if __has_include("attnkit/attnkit_visual.h")
#include "attnkit/attnkit_visual.h"
#define ATTNKIT_PY_HAVE_VISUAL 1
#endif
#endif
#ifndef ATTNKIT_PY_HAVE_SPARSE
#define ATTNKIT_PY_HAVE_SPARSE 0
#endif
#ifndef ATTNKIT_PY_HAVE_VISUAL
#define ATTNKIT_PY_HAVE_VISUAL 0
#endif

/* ------------------------------------------------------------------------------------------------
 * Errors */

/* callable(code: int, message: str) -> exception instance; set by the package at import. */
static PyObject* error_factory = NULL;

static PyObject* raise_code(int code, const char* message) {
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

/* Raises the exception for `status` and frees it. Returns NULL for `return raise_status(s);`. */
static PyObject* raise_status(attnkit_status* status) {
  PyObject* result =
      raise_code((int)attnkit_status_get_code(status), attnkit_status_get_message(status));
  attnkit_status_free(status);
  return result;
}

static PyObject* raise_invalid_argument(const char* format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  PyOS_vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  return raise_code(ATTNKIT_INVALID_ARGUMENT, message);
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
 * Tensors: a borrowed DLTensor over a Python object, without copies. */

#define ATTNKIT_PY_MAX_RANK 8

typedef struct {
  const char* name;
  int present;              /* 0 for None (optional arguments) */
  DLTensor tensor;          /* what the C ABI sees */
  PyObject* capsule;        /* the consumed "used_dltensor" capsule, or NULL */
  DLManagedTensor* managed; /* its tensor; its deleter is called on release */
  Py_buffer view;           /* the buffer-protocol path */
  int has_view;
  int64_t shape[ATTNKIT_PY_MAX_RANK];
  int64_t strides[ATTNKIT_PY_MAX_RANK];
} TensorArg;

static void tensor_release(TensorArg* arg) {
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

static const DLTensor* tensor_ptr(const TensorArg* arg) {
  return arg->present ? &arg->tensor : NULL;
}

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
      raise_invalid_argument("%s: must be writable (it receives the result)", arg->name);
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
    raise_invalid_argument("%s: rank %d is above %d", arg->name, v->ndim, ATTNKIT_PY_MAX_RANK);
    return -1;
  }
  DLDataType dtype;
  if (!dtype_from_format(v->format, v->itemsize, &dtype)) {
    raise_invalid_argument("%s: unsupported element format '%s'", arg->name,
                           v->format ? v->format : "B");
    return -1;
  }
  for (int i = 0; i < v->ndim; ++i) {
    if (v->strides[i] % v->itemsize != 0) {
      raise_invalid_argument(
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

/* Fills `arg` from `obj`: None (when `optional`), an object with __dlpack__ (its "dltensor" capsule
 * is consumed as the protocol says: renamed "used_dltensor", the deleter called on release), or the
 * buffer protocol (also the fallback when __dlpack__ refuses, e.g. numpy's read-only arrays).
 * Returns 0, or -1 with an exception set; call tensor_release() either way. */
static int tensor_from_object(TensorArg* arg, PyObject* obj, const char* name, int writable,
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

/* ------------------------------------------------------------------------------------------------
 * Small conversions */

/* A view of a config argument: str (textproto, UTF-8) or any bytes-like object (binary). */
typedef struct {
  int is_text;
  const char* data;
  Py_ssize_t size;
  Py_buffer view;
  int has_view;
} ConfigArg;

static int config_from_object(ConfigArg* arg, PyObject* obj) {
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

static void config_release(ConfigArg* arg) {
  if (arg->has_view) PyBuffer_Release(&arg->view);
  arg->has_view = 0;
}

static PyObject* int64_bytes(const int64_t* data, size_t size) {
  return PyByteArray_FromStringAndSize((const char*)data, (Py_ssize_t)(size * sizeof(int64_t)));
}

/* A sequence of ints (or None) as an int64 array owned by the caller (PyMem_Free). */
static int int64_list(PyObject* obj, const char* name, int64_t** out, size_t* size) {
  *out = NULL;
  *size = 0;
  if (obj == Py_None) return 0;
  PyObject* seq = PySequence_Fast(obj, name);
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

/* ------------------------------------------------------------------------------------------------
 * Handles: one wrapper layout for every C object. */

typedef struct {
  PyObject_HEAD void* handle;
  void (*free_fn)(void*);
  const char* kind;        /* "Session", ... for messages */
  PyThread_type_lock lock; /* NULL when the C object allows concurrent calls */
  Py_ssize_t active;       /* calls in flight with the GIL released */
  int closing;             /* close() came during a call: the last call frees */
  PyObject* weakrefs;
} Handle;

static void handle_free_now(Handle* self) {
  if (self->handle != NULL && self->free_fn != NULL) {
    void* handle = self->handle;
    self->handle = NULL;
    Py_BEGIN_ALLOW_THREADS self->free_fn(handle);
    Py_END_ALLOW_THREADS
  }
  self->handle = NULL;
}

/* Starts a call: raises FAILED_PRECONDITION on a closed object. */
static int handle_begin(Handle* self) {
  if (self->handle == NULL || self->closing) {
    char message[128];
    PyOS_snprintf(message, sizeof(message), "%s: used after close()", self->kind);
    raise_code(ATTNKIT_FAILED_PRECONDITION, message);
    return -1;
  }
  ++self->active;
  return 0;
}

static void handle_end(Handle* self) {
  if (--self->active == 0 && self->closing) handle_free_now(self);
}

/* Runs `statement` without the GIL, holding the object's lock when it has one. */
#define ATTNKIT_PY_CALL(self, statement)                           \
  do {                                                             \
    Py_BEGIN_ALLOW_THREADS if ((self)->lock != NULL)               \
        PyThread_acquire_lock((self)->lock, WAIT_LOCK);            \
    statement;                                                     \
    if ((self)->lock != NULL) PyThread_release_lock((self)->lock); \
    Py_END_ALLOW_THREADS                                           \
  } while (0)

static int handle_init_common(Handle* self, const char* kind, void (*free_fn)(void*),
                              int needs_lock) {
  self->kind = kind;
  self->free_fn = free_fn;
  if (needs_lock) {
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
      PyErr_NoMemory();
      return -1;
    }
  }
  return 0;
}

static void handle_dealloc(Handle* self) {
  /* A call in flight holds a reference, so nothing is active here. */
  if (self->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject*)self);
  handle_free_now(self);
  if (self->lock != NULL) PyThread_free_lock(self->lock);
  Py_TYPE(self)->tp_free((PyObject*)self);
}

static PyObject* handle_close(Handle* self, PyObject* unused) {
  if (self->handle == NULL || self->closing) Py_RETURN_NONE;
  if (self->active > 0) {
    self->closing = 1;
  } else {
    handle_free_now(self);
  }
  Py_RETURN_NONE;
}

static PyObject* handle_get_closed(Handle* self, void* unused) {
  return PyBool_FromLong(self->handle == NULL || self->closing);
}

static PyGetSetDef handle_getset[] = {
    {"closed", (getter)handle_get_closed, NULL, "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define ATTNKIT_PY_HANDLE_TYPE(c_name, py_name, doc, methods)               \
  static PyTypeObject c_name = {                                            \
      PyVarObject_HEAD_INIT(NULL, 0).tp_name = "attnkit._attnkit." py_name, \
      .tp_basicsize = sizeof(Handle),                                       \
      .tp_dealloc = (destructor)handle_dealloc,                             \
      .tp_flags = Py_TPFLAGS_DEFAULT,                                       \
      .tp_doc = doc,                                                        \
      .tp_weaklistoffset = offsetof(Handle, weakrefs),                      \
      .tp_methods = methods,                                                \
      .tp_getset = handle_getset,                                           \
  }

static Handle* handle_alloc(PyTypeObject* type, const char* kind, void (*free_fn)(void*),
                            int needs_lock) {
  Handle* self = (Handle*)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  if (handle_init_common(self, kind, free_fn, needs_lock) != 0) {
    Py_DECREF(self);
    return NULL;
  }
  return self;
}

/* ------------------------------------------------------------------------------------------------
 * Session */

/* A C object created from a config argument (attnkit_pb2 message, bytes or textproto): `create`
 * calls the object's _create or _create_from_text with the GIL released. */
typedef attnkit_status* (*CreateFromConfig)(const ConfigArg* config, void** out);

static PyObject* handle_new_from_config(PyTypeObject* type, PyObject* args, PyObject* kwargs,
                                        const char* kind, void (*free_fn)(void*), int needs_lock,
                                        CreateFromConfig create) {
  static char* keywords[] = {"config", NULL};
  char format[64];
  PyObject* config_obj;
  PyOS_snprintf(format, sizeof(format), "O:%s", kind);
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, &config_obj)) return NULL;
  ConfigArg config;
  if (config_from_object(&config, config_obj) != 0) return NULL;
  Handle* self = handle_alloc(type, kind, free_fn, needs_lock);
  if (self == NULL) {
    config_release(&config);
    return NULL;
  }
  void* handle = NULL;
  attnkit_status* status;
  Py_BEGIN_ALLOW_THREADS status = create(&config, &handle);
  Py_END_ALLOW_THREADS config_release(&config);
  if (status != NULL) {
    Py_DECREF(self);
    return raise_status(status);
  }
  self->handle = handle;
  return (PyObject*)self;
}

static void session_free(void* p) { attnkit_session_free((attnkit_session*)p); }

static attnkit_status* session_create_from_config(const ConfigArg* config, void** out) {
  attnkit_session* object = NULL;
  attnkit_status* status =
      config->is_text
          ? attnkit_session_create_from_text(config->data, (size_t)config->size, &object)
          : attnkit_session_create(config->data, (size_t)config->size, &object);
  *out = object;
  return status;
}

static PyObject* session_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  return handle_new_from_config(type, args, kwargs, "Session", session_free, 1,
                                session_create_from_config);
}

static PyObject* session_attend(Handle* self, PyObject* args) {
  int layer;
  PyObject *q_obj, *k_obj, *v_obj, *out_obj;
  if (!PyArg_ParseTuple(args, "iOOOO:attend", &layer, &q_obj, &k_obj, &v_obj, &out_obj)) {
    return NULL;
  }
  TensorArg q, k, v, out;
  PyObject* result = NULL;
  memset(&k, 0, sizeof(k));
  memset(&v, 0, sizeof(v));
  memset(&out, 0, sizeof(out));
  if (tensor_from_object(&q, q_obj, "q", 0, 0) == 0 &&
      tensor_from_object(&k, k_obj, "k", 0, 0) == 0 &&
      tensor_from_object(&v, v_obj, "v", 0, 0) == 0 &&
      tensor_from_object(&out, out_obj, "out", 1, 0) == 0 && handle_begin(self) == 0) {
    attnkit_status* status;
    ATTNKIT_PY_CALL(
        self, status = attnkit_session_attend((attnkit_session*)self->handle, layer, &q.tensor,
                                              &k.tensor, &v.tensor, &out.tensor));
    handle_end(self);
    if (status != NULL) {
      raise_status(status);
    } else {
      result = Py_NewRef(Py_None);
    }
  }
  tensor_release(&q);
  tensor_release(&k);
  tensor_release(&v);
  tensor_release(&out);
  return result;
}

static PyObject* session_stats(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  attnkit_buffer* buffer = NULL;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_session_stats((attnkit_session*)self->handle, &buffer));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  PyObject* bytes = PyBytes_FromStringAndSize((const char*)buffer->data, (Py_ssize_t)buffer->size);
  attnkit_buffer_free(buffer);
  return bytes;
}

static PyObject* session_bytes_held(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  int64_t held = 0;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_session_bytes_held((attnkit_session*)self->handle, &held));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  return PyLong_FromLongLong(held);
}

static PyObject* session_positions(Handle* self, PyObject* args) {
  int layer, sequence, kv_head;
  if (!PyArg_ParseTuple(args, "iii:positions", &layer, &sequence, &kv_head)) return NULL;
  if (handle_begin(self) != 0) return NULL;
  attnkit_int64_array* positions = NULL;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_session_positions((attnkit_session*)self->handle, layer,
                                                           sequence, kv_head, &positions));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  PyObject* result = int64_bytes(positions->data, positions->size);
  attnkit_int64_array_free(positions);
  return result;
}

static PyObject* session_next_position(Handle* self, PyObject* args) {
  int sequence;
  if (!PyArg_ParseTuple(args, "i:next_position", &sequence)) return NULL;
  if (handle_begin(self) != 0) return NULL;
  int64_t position = 0;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_session_next_position((attnkit_session*)self->handle,
                                                               sequence, &position));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  return PyLong_FromLongLong(position);
}

static PyObject* session_reset(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_session_reset((attnkit_session*)self->handle));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  Py_RETURN_NONE;
}

static PyMethodDef session_methods[] = {
    {"attend", (PyCFunction)session_attend, METH_VARARGS,
     "attend(layer, q, k, v, out): one attention call; tensors are borrowed for the call."},
    {"stats", (PyCFunction)session_stats, METH_NOARGS, "Serialized attnkit.v1.SessionStats."},
    {"bytes_held", (PyCFunction)session_bytes_held, METH_NOARGS, "Bytes of KV pages in use."},
    {"positions", (PyCFunction)session_positions, METH_VARARGS,
     "positions(layer, sequence, kv_head) -> bytearray of int64 original positions."},
    {"next_position", (PyCFunction)session_next_position, METH_VARARGS,
     "next_position(sequence) -> the RoPE position of the next token."},
    {"reset", (PyCFunction)session_reset, METH_NOARGS, "Drops every cached token."},
    {"close", (PyCFunction)handle_close, METH_NOARGS, "Frees the session; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(SessionType, "Session", "Session(config: bytes | str): attnkit_session.",
                       session_methods);

/* ------------------------------------------------------------------------------------------------
 * EvictionPolicy */

static void eviction_free(void* p) { attnkit_eviction_policy_free((attnkit_eviction_policy*)p); }

static PyObject* eviction_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  static char* keywords[] = {"config", "num_layers", "num_heads", "num_kv_heads", NULL};
  PyObject* config_obj;
  int num_layers, num_heads, num_kv_heads;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oiii:EvictionPolicy", keywords, &config_obj,
                                   &num_layers, &num_heads, &num_kv_heads)) {
    return NULL;
  }
  ConfigArg config;
  if (config_from_object(&config, config_obj) != 0) return NULL;
  Handle* self = handle_alloc(type, "EvictionPolicy", eviction_free, 1);
  if (self == NULL) {
    config_release(&config);
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
  Py_END_ALLOW_THREADS config_release(&config);
  if (status != NULL) {
    Py_DECREF(self);
    return raise_status(status);
  }
  self->handle = policy;
  return (PyObject*)self;
}

static PyObject* eviction_observe(Handle* self, PyObject* args) {
  int layer;
  PyObject *attention_obj, *lengths_obj = Py_None;
  if (!PyArg_ParseTuple(args, "iO|O:observe", &layer, &attention_obj, &lengths_obj)) return NULL;
  int64_t* lengths = NULL;
  size_t num_lengths = 0;
  if (int64_list(lengths_obj, "lengths: expected a sequence of ints", &lengths, &num_lengths) !=
      0) {
    return NULL;
  }
  TensorArg attention;
  PyObject* result = NULL;
  if (tensor_from_object(&attention, attention_obj, "attention", 0, 0) == 0 &&
      handle_begin(self) == 0) {
    attnkit_status* status;
    ATTNKIT_PY_CALL(self, status = attnkit_eviction_policy_observe(
                              (attnkit_eviction_policy*)self->handle, layer, &attention.tensor,
                              lengths, num_lengths));
    handle_end(self);
    result = status != NULL ? raise_status(status) : Py_NewRef(Py_None);
  }
  tensor_release(&attention);
  PyMem_Free(lengths);
  return result;
}

static PyObject* eviction_select(Handle* self, PyObject* args) {
  int layer;
  PyObject *keys_obj, *lengths_obj;
  if (!PyArg_ParseTuple(args, "iOO:select", &layer, &keys_obj, &lengths_obj)) return NULL;
  int64_t* lengths = NULL;
  size_t num_lengths = 0;
  if (int64_list(lengths_obj, "lengths: expected a sequence of ints", &lengths, &num_lengths) !=
      0) {
    return NULL;
  }
  TensorArg keys;
  PyObject* result = NULL;
  if (tensor_from_object(&keys, keys_obj, "keys", 0, 1) == 0 && handle_begin(self) == 0) {
    attnkit_kept_positions* kept = NULL;
    attnkit_status* status;
    ATTNKIT_PY_CALL(self, status = attnkit_eviction_policy_select(
                              (attnkit_eviction_policy*)self->handle, layer, tensor_ptr(&keys),
                              lengths, num_lengths, &kept));
    handle_end(self);
    if (status != NULL) {
      raise_status(status);
    } else {
      size_t rows = attnkit_kept_positions_num_rows(kept);
      result = PyList_New((Py_ssize_t)rows);
      for (size_t r = 0; result != NULL && r < rows; ++r) {
        size_t size = 0;
        const int64_t* row = attnkit_kept_positions_row(kept, r, &size);
        PyObject* item = int64_bytes(row, size);
        if (item == NULL) {
          Py_CLEAR(result);
        } else {
          PyList_SET_ITEM(result, (Py_ssize_t)r, item);
        }
      }
      attnkit_kept_positions_free(kept);
    }
  }
  tensor_release(&keys);
  PyMem_Free(lengths);
  return result;
}

static PyObject* eviction_needs_keys(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  int32_t value;
  ATTNKIT_PY_CALL(self, value = attnkit_eviction_policy_needs_keys(
                            (const attnkit_eviction_policy*)self->handle));
  handle_end(self);
  return PyBool_FromLong(value);
}

static PyObject* eviction_per_head(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  int32_t value;
  ATTNKIT_PY_CALL(
      self, value = attnkit_eviction_policy_per_head((const attnkit_eviction_policy*)self->handle));
  handle_end(self);
  return PyBool_FromLong(value);
}

static PyObject* eviction_layer_budget(Handle* self, PyObject* args) {
  int layer;
  if (!PyArg_ParseTuple(args, "i:layer_budget", &layer)) return NULL;
  if (handle_begin(self) != 0) return NULL;
  int64_t budget = 0;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_eviction_policy_layer_budget(
                            (const attnkit_eviction_policy*)self->handle, layer, &budget));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  return PyLong_FromLongLong(budget);
}

static PyObject* eviction_reset(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self,
                  status = attnkit_eviction_policy_reset((attnkit_eviction_policy*)self->handle));
  handle_end(self);
  if (status != NULL) return raise_status(status);
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
    {"close", (PyCFunction)handle_close, METH_NOARGS, "Frees the policy; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(EvictionPolicyType, "EvictionPolicy",
                       "EvictionPolicy(config, num_layers, num_heads, num_kv_heads).",
                       eviction_methods);

/* ------------------------------------------------------------------------------------------------
 * SparseAttention (thread-safe C object: no lock) */
#if ATTNKIT_PY_HAVE_SPARSE

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
  return handle_new_from_config(type, args, kwargs, "SparseAttention", sparse_free, 0,
                                sparse_create_from_config);
}

static PyObject* sparse_mask_shape(Handle* self, PyObject* args) {
  long long num_heads, q_len, k_len;
  if (!PyArg_ParseTuple(args, "LLL:mask_shape", &num_heads, &q_len, &k_len)) return NULL;
  if (handle_begin(self) != 0) return NULL;
  int64_t heads = 0, q_blocks = 0, k_blocks = 0;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_sparse_attention_mask_shape(
                            (const attnkit_sparse_attention*)self->handle, num_heads, q_len, k_len,
                            &heads, &q_blocks, &k_blocks));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  return Py_BuildValue("(LLL)", (long long)heads, (long long)q_blocks, (long long)k_blocks);
}

static PyObject* sparse_build_mask(Handle* self, PyObject* args) {
  PyObject *q_obj, *k_obj, *mask_obj;
  if (!PyArg_ParseTuple(args, "OOO:build_mask", &q_obj, &k_obj, &mask_obj)) return NULL;
  TensorArg q, k, mask;
  PyObject* result = NULL;
  memset(&k, 0, sizeof(k));
  memset(&mask, 0, sizeof(mask));
  if (tensor_from_object(&q, q_obj, "q", 0, 0) == 0 &&
      tensor_from_object(&k, k_obj, "k", 0, 0) == 0 &&
      tensor_from_object(&mask, mask_obj, "mask_out", 1, 0) == 0 && handle_begin(self) == 0) {
    attnkit_status* status;
    ATTNKIT_PY_CALL(self, status = attnkit_sparse_attention_build_mask(
                              (const attnkit_sparse_attention*)self->handle, &q.tensor, &k.tensor,
                              &mask.tensor));
    handle_end(self);
    result = status != NULL ? raise_status(status) : Py_NewRef(Py_None);
  }
  tensor_release(&q);
  tensor_release(&k);
  tensor_release(&mask);
  return result;
}

static PyObject* sparse_attention(Handle* self, PyObject* args) {
  PyObject *q_obj, *k_obj, *v_obj, *mask_obj, *out_obj;
  double scale;
  if (!PyArg_ParseTuple(args, "OOOOdO:attention", &q_obj, &k_obj, &v_obj, &mask_obj, &scale,
                        &out_obj)) {
    return NULL;
  }
  TensorArg q, k, v, mask, out;
  PyObject* result = NULL;
  memset(&k, 0, sizeof(k));
  memset(&v, 0, sizeof(v));
  memset(&mask, 0, sizeof(mask));
  memset(&out, 0, sizeof(out));
  if (tensor_from_object(&q, q_obj, "q", 0, 0) == 0 &&
      tensor_from_object(&k, k_obj, "k", 0, 0) == 0 &&
      tensor_from_object(&v, v_obj, "v", 0, 0) == 0 &&
      tensor_from_object(&mask, mask_obj, "mask", 0, 0) == 0 &&
      tensor_from_object(&out, out_obj, "out", 1, 0) == 0 && handle_begin(self) == 0) {
    attnkit_status* status;
    ATTNKIT_PY_CALL(self, status = attnkit_sparse_attention_attention(
                              (const attnkit_sparse_attention*)self->handle, &q.tensor, &k.tensor,
                              &v.tensor, &mask.tensor, scale, &out.tensor));
    handle_end(self);
    result = status != NULL ? raise_status(status) : Py_NewRef(Py_None);
  }
  tensor_release(&q);
  tensor_release(&k);
  tensor_release(&v);
  tensor_release(&mask);
  tensor_release(&out);
  return result;
}

static PyObject* sparse_prefill(Handle* self, PyObject* args) {
  PyObject *q_obj, *k_obj, *v_obj, *out_obj;
  double scale;
  if (!PyArg_ParseTuple(args, "OOOdO:prefill", &q_obj, &k_obj, &v_obj, &scale, &out_obj)) {
    return NULL;
  }
  TensorArg q, k, v, out;
  PyObject* result = NULL;
  memset(&k, 0, sizeof(k));
  memset(&v, 0, sizeof(v));
  memset(&out, 0, sizeof(out));
  if (tensor_from_object(&q, q_obj, "q", 0, 0) == 0 &&
      tensor_from_object(&k, k_obj, "k", 0, 0) == 0 &&
      tensor_from_object(&v, v_obj, "v", 0, 0) == 0 &&
      tensor_from_object(&out, out_obj, "out", 1, 0) == 0 && handle_begin(self) == 0) {
    double density = 0.0;
    attnkit_status* status;
    ATTNKIT_PY_CALL(self, status = attnkit_sparse_attention_prefill(
                              (const attnkit_sparse_attention*)self->handle, &q.tensor, &k.tensor,
                              &v.tensor, scale, &out.tensor, &density));
    handle_end(self);
    result = status != NULL ? raise_status(status) : PyFloat_FromDouble(density);
  }
  tensor_release(&q);
  tensor_release(&k);
  tensor_release(&v);
  tensor_release(&out);
  return result;
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
    {"close", (PyCFunction)handle_close, METH_NOARGS, "Frees the object; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(SparseAttentionType, "SparseAttention",
                       "SparseAttention(config: bytes | str): attnkit_sparse_attention.",
                       sparse_methods);
#endif /* ATTNKIT_PY_HAVE_SPARSE */

/* ------------------------------------------------------------------------------------------------
 * VisualPruner and VisualSelection (thread-safe C objects: no lock) */
#if ATTNKIT_PY_HAVE_VISUAL

static void pruner_free(void* p) { attnkit_visual_pruner_free((attnkit_visual_pruner*)p); }
static void selection_free(void* p) { attnkit_visual_selection_free((attnkit_visual_selection*)p); }

static PyObject* selection_num_images(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  size_t n = attnkit_visual_selection_num_images((const attnkit_visual_selection*)self->handle);
  handle_end(self);
  return PyLong_FromSize_t(n);
}

static PyObject* selection_image_size(Handle* self, PyObject* args) {
  Py_ssize_t image;
  if (!PyArg_ParseTuple(args, "n:image_size", &image)) return NULL;
  if (handle_begin(self) != 0) return NULL;
  size_t n = image < 0 ? 0
                       : attnkit_visual_selection_image_size(
                             (const attnkit_visual_selection*)self->handle, (size_t)image);
  handle_end(self);
  return PyLong_FromSize_t(n);
}

static PyObject* selection_indices(Handle* self, PyObject* args) {
  Py_ssize_t image;
  if (!PyArg_ParseTuple(args, "n:indices", &image)) return NULL;
  if (handle_begin(self) != 0) return NULL;
  const attnkit_visual_selection* selection = (const attnkit_visual_selection*)self->handle;
  PyObject* result;
  if (image < 0 || (size_t)image >= attnkit_visual_selection_num_images(selection)) {
    result = PyErr_Format(PyExc_IndexError, "image %zd out of range", image);
  } else {
    size_t kept = attnkit_visual_selection_num_kept(selection, (size_t)image);
    const int64_t* indices = attnkit_visual_selection_indices(selection, (size_t)image);
    result = int64_bytes(indices, indices == NULL ? 0 : kept);
  }
  handle_end(self);
  return result;
}

static PyObject* selection_flat_indices(Handle* self, PyObject* unused) {
  if (handle_begin(self) != 0) return NULL;
  attnkit_int64_array* flat = NULL;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_visual_selection_flat_indices(
                            (const attnkit_visual_selection*)self->handle, &flat));
  handle_end(self);
  if (status != NULL) return raise_status(status);
  PyObject* result = int64_bytes(flat->data, flat->size);
  attnkit_int64_array_free(flat);
  return result;
}

static PyObject* selection_kept_positions(Handle* self, PyObject* args) {
  Py_buffer mask;
  if (!PyArg_ParseTuple(args, "y*:kept_positions", &mask)) return NULL;
  if (handle_begin(self) != 0) {
    PyBuffer_Release(&mask);
    return NULL;
  }
  attnkit_int64_array* positions = NULL;
  attnkit_status* status;
  ATTNKIT_PY_CALL(self, status = attnkit_visual_selection_kept_positions(
                            (const attnkit_visual_selection*)self->handle, (const uint8_t*)mask.buf,
                            (size_t)mask.len, &positions));
  handle_end(self);
  PyBuffer_Release(&mask);
  if (status != NULL) return raise_status(status);
  PyObject* result = int64_bytes(positions->data, positions->size);
  attnkit_int64_array_free(positions);
  return result;
}

static PyMethodDef selection_methods[] = {
    {"num_images", (PyCFunction)selection_num_images, METH_NOARGS, "Images of the selection."},
    {"image_size", (PyCFunction)selection_image_size, METH_VARARGS, "Tokens of image i."},
    {"indices", (PyCFunction)selection_indices, METH_VARARGS,
     "indices(i) -> bytearray of int64 kept token indices of image i."},
    {"flat_indices", (PyCFunction)selection_flat_indices, METH_NOARGS,
     "Kept tokens of all images as indices into the concatenated tokens."},
    {"kept_positions", (PyCFunction)selection_kept_positions, METH_VARARGS,
     "kept_positions(image_token_mask: bytes-like) -> bytearray of int64 prompt positions."},
    {"close", (PyCFunction)handle_close, METH_NOARGS, "Frees the selection; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(VisualSelectionType, "VisualSelection",
                       "attnkit_visual_selection (returned by VisualPruner.select).",
                       selection_methods);

static attnkit_status* pruner_create_from_config(const ConfigArg* config, void** out) {
  attnkit_visual_pruner* object = NULL;
  attnkit_status* status =
      config->is_text
          ? attnkit_visual_pruner_create_from_text(config->data, (size_t)config->size, &object)
          : attnkit_visual_pruner_create(config->data, (size_t)config->size, &object);
  *out = object;
  return status;
}

static PyObject* pruner_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  return handle_new_from_config(type, args, kwargs, "VisualPruner", pruner_free, 0,
                                pruner_create_from_config);
}

static PyObject* wrap_selection(attnkit_visual_selection* selection) {
  Handle* wrapper = handle_alloc(&VisualSelectionType, "VisualSelection", selection_free, 0);
  if (wrapper == NULL) {
    attnkit_visual_selection_free(selection);
    return NULL;
  }
  wrapper->handle = selection;
  return (PyObject*)wrapper;
}

/* select(image_embeds, image_features, text_embeds, image_sizes=None): the ragged variant when
 * image_sizes is a sequence. */
static PyObject* pruner_select(Handle* self, PyObject* args) {
  PyObject *embeds_obj, *features_obj, *text_obj, *sizes_obj = Py_None;
  if (!PyArg_ParseTuple(args, "OOO|O:select", &embeds_obj, &features_obj, &text_obj, &sizes_obj)) {
    return NULL;
  }
  int64_t* sizes = NULL;
  size_t num_images = 0;
  if (int64_list(sizes_obj, "image_sizes: expected a sequence of ints", &sizes, &num_images) != 0) {
    return NULL;
  }
  const int ragged = sizes_obj != Py_None;
  TensorArg embeds, features, text;
  PyObject* result = NULL;
  memset(&features, 0, sizeof(features));
  memset(&text, 0, sizeof(text));
  if (tensor_from_object(&embeds, embeds_obj, "image_embeds", 0, 1) == 0 &&
      tensor_from_object(&features, features_obj, "image_features", 0, 0) == 0 &&
      tensor_from_object(&text, text_obj, "text_embeds", 0, 1) == 0 && handle_begin(self) == 0) {
    attnkit_visual_selection* selection = NULL;
    attnkit_status* status;
    const attnkit_visual_pruner* pruner = (const attnkit_visual_pruner*)self->handle;
    if (ragged) {
      ATTNKIT_PY_CALL(self, status = attnkit_visual_pruner_select_ragged(
                                pruner, tensor_ptr(&embeds), &features.tensor, sizes, num_images,
                                tensor_ptr(&text), &selection));
    } else {
      ATTNKIT_PY_CALL(
          self, status = attnkit_visual_pruner_select(pruner, tensor_ptr(&embeds), &features.tensor,
                                                      tensor_ptr(&text), &selection));
    }
    handle_end(self);
    result = status != NULL ? raise_status(status) : wrap_selection(selection);
  }
  tensor_release(&embeds);
  tensor_release(&features);
  tensor_release(&text);
  PyMem_Free(sizes);
  return result;
}

static PyMethodDef pruner_methods[] = {
    {"select", (PyCFunction)pruner_select, METH_VARARGS,
     "select(image_embeds, image_features, text_embeds, image_sizes=None) -> VisualSelection."},
    {"close", (PyCFunction)handle_close, METH_NOARGS, "Frees the pruner; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(VisualPrunerType, "VisualPruner",
                       "VisualPruner(config: bytes | str): attnkit_visual_pruner.", pruner_methods);
#endif /* ATTNKIT_PY_HAVE_VISUAL */

/* ------------------------------------------------------------------------------------------------
 * Module functions */

static PyObject* abi_version(PyObject* module, PyObject* unused) {
  return PyLong_FromLong((long)attnkit_abi_version());
}

static PyObject* version_string(PyObject* module, PyObject* unused) {
  return PyUnicode_FromString(attnkit_version_string());
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
  if (config_from_object(&config, config_obj) != 0) return NULL;
  attnkit_status* status;
  Py_BEGIN_ALLOW_THREADS status =
      config.is_text
          ? attnkit_config_validate_text((attnkit_config_kind)kind, config.data,
                                         (size_t)config.size)
          : attnkit_config_validate((attnkit_config_kind)kind, config.data, (size_t)config.size);
  Py_END_ALLOW_THREADS config_release(&config);
  if (status != NULL) return raise_status(status);
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
  if (status != NULL) return raise_status(status);
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
  if (status != NULL) return raise_status(status);
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
  if (tensor_from_object(&arg, obj, name, is_output, 0) == 0) {
    attnkit_status* status = attnkit_tensor_check(&arg.tensor, name, rank, is_output);
    result = status != NULL ? raise_status(status) : Py_NewRef(Py_None);
  }
  tensor_release(&arg);
  return result;
}

/* describe_tensor(tensor) -> dict: the DLTensor the module hands to the library (data pointer after
 * byte_offset, shape, strides in elements, dtype, device, which protocol). For tests of zero copy.
 */
static PyObject* describe_tensor(PyObject* module, PyObject* obj) {
  TensorArg arg;
  PyObject* result = NULL;
  if (tensor_from_object(&arg, obj, "tensor", 0, 0) == 0) {
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
  tensor_release(&arg);
  return result;
}

static PyMethodDef module_methods[] = {
    {"abi_version", abi_version, METH_NOARGS, "attnkit_abi_version() of the loaded library."},
    {"version_string", version_string, METH_NOARGS, "attnkit_version_string()."},
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

static int add_type(PyObject* module, PyTypeObject* type, const char* name, newfunc tp_new) {
  type->tp_new = tp_new;
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
      PyModule_AddIntConstant(module, "HAVE_SPARSE", ATTNKIT_PY_HAVE_SPARSE) != 0 ||
      PyModule_AddIntConstant(module, "HAVE_VISUAL", ATTNKIT_PY_HAVE_VISUAL) != 0 ||
      PyModule_AddIntConstant(module, "CONFIG_EVICTION", ATTNKIT_CONFIG_EVICTION) != 0 ||
      PyModule_AddIntConstant(module, "CONFIG_SPARSE_ATTENTION", ATTNKIT_CONFIG_SPARSE_ATTENTION) !=
          0 ||
      PyModule_AddIntConstant(module, "CONFIG_VISUAL_PRUNING", ATTNKIT_CONFIG_VISUAL_PRUNING) !=
          0 ||
      PyModule_AddIntConstant(module, "CONFIG_SESSION", ATTNKIT_CONFIG_SESSION) != 0 ||
      add_type(module, &SessionType, "Session", session_new) != 0 ||
      add_type(module, &EvictionPolicyType, "EvictionPolicy", eviction_new) != 0) {
    Py_DECREF(module);
    return NULL;
  }
#if ATTNKIT_PY_HAVE_SPARSE
  if (add_type(module, &SparseAttentionType, "SparseAttention", sparse_new) != 0) {
    Py_DECREF(module);
    return NULL;
  }
#endif
#if ATTNKIT_PY_HAVE_VISUAL
  if (add_type(module, &VisualSelectionType, "VisualSelection", NULL) != 0 ||
      add_type(module, &VisualPrunerType, "VisualPruner", pruner_new) != 0) {
    Py_DECREF(module);
    return NULL;
  }
#endif
  return module;
}
