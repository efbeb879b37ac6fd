/* Internal header of attnkit._attnkit, the CPython extension over attnkit's C ABI (libattnkit only,
 * no C++). One source file per object, as capi/src is split:
 *   module.c    the module: errors, configs, tensor checks, PyInit__attnkit
 *   tensors.c   Python objects -> DLTensor views and configs; int64 lists and results
 *   handle.c    the wrapper every C object shares (lifetime, lock, close during a call)
 *   session.c, eviction.c, sparse.c, visual.c   one type each (visual.c: pruner and selection)
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
 * object when that call returns.
 *
 * Every name declared here is internal to the extension (the target builds with hidden visibility;
 * only PyInit__attnkit is exported). */
#ifndef ATTNKIT_PY_H_
#define ATTNKIT_PY_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stddef.h>
#include <stdint.h>

#include "attnkit/attnkit.h"

/* ------------------------------------------------------------------------------------------------
 * Errors (module.c) */

/* Raises the exception of `code` through the package's error factory; returns NULL. */
PyObject* akpy_raise_code(int code, const char* message);
/* Raises the exception for `status` and frees it. Returns NULL for `return akpy_raise_status(s);`.
 */
PyObject* akpy_raise_status(attnkit_status* status);
/* Raises INVALID_ARGUMENT with a printf-style message; returns NULL. */
PyObject* akpy_raise_invalid_argument(const char* format, ...);

/* ------------------------------------------------------------------------------------------------
 * Tensors (tensors.c): a borrowed DLTensor over a Python object, without copies. */

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

/* Fills `arg` from `obj`: None (when `optional`), an object with __dlpack__ (its "dltensor" capsule
 * is consumed as the protocol says: renamed "used_dltensor", the deleter called on release), or the
 * buffer protocol (also the fallback when __dlpack__ refuses, e.g. numpy's read-only arrays).
 * Returns 0, or -1 with an exception set; call akpy_tensor_release() either way. */
int akpy_tensor_from_object(TensorArg* arg, PyObject* obj, const char* name, int writable,
                            int optional);
void akpy_tensor_release(TensorArg* arg);
/* The tensor for the C ABI: NULL for an absent optional argument. */
const DLTensor* akpy_tensor_ptr(const TensorArg* arg);

/* How a method takes one tensor argument. */
typedef struct {
  const char* name;
  int writable; /* receives a result */
  int optional; /* None is allowed (passed as NULL) */
} TensorSpec;

/* Fills args[0..count) from objs[i] as specs[i] says, stopping at the first failure. Returns 0, or
 * -1 with an exception set; call akpy_tensors_release(args, count) either way. */
int akpy_tensors_from_objects(TensorArg* args, PyObject* const* objs, const TensorSpec* specs,
                              size_t count);
void akpy_tensors_release(TensorArg* args, size_t count);

/* A view of a config argument: str (textproto, UTF-8) or any bytes-like object (binary). */
typedef struct {
  int is_text;
  const char* data;
  Py_ssize_t size;
  Py_buffer view;
  int has_view;
} ConfigArg;

int akpy_config_from_object(ConfigArg* arg, PyObject* obj);
void akpy_config_release(ConfigArg* arg);

/* A bytearray holding `size` int64 values. */
PyObject* akpy_int64_bytes(const int64_t* data, size_t size);
/* A sequence of ints (or None: NULL, 0) as an int64 array owned by the caller (PyMem_Free).
 * `error` is the TypeError message for a non-sequence. Returns 0, or -1 with an exception set. */
int akpy_int64_list(PyObject* obj, const char* error, int64_t** out, size_t* size);

/* ------------------------------------------------------------------------------------------------
 * Handles (handle.c): one wrapper layout for every C object. */

typedef struct {
  PyObject_HEAD void* handle;
  void (*free_fn)(void*);
  const char* kind;        /* "Session", ... for messages */
  PyThread_type_lock lock; /* NULL when the C object allows concurrent calls */
  Py_ssize_t active;       /* calls in flight with the GIL released */
  int closing;             /* close() came during a call: the last call frees */
  PyObject* weakrefs;
} Handle;

/* Starts a call: raises FAILED_PRECONDITION on a closed object. Returns 0 or -1. */
int akpy_handle_begin(Handle* self);
/* Ends a call; the last call after close() frees the C object. */
void akpy_handle_end(Handle* self);

/* Runs `statement` without the GIL, holding the object's lock when it has one. */
#define ATTNKIT_PY_CALL(self, statement)                           \
  do {                                                             \
    Py_BEGIN_ALLOW_THREADS if ((self)->lock != NULL)               \
        PyThread_acquire_lock((self)->lock, WAIT_LOCK);            \
    statement;                                                     \
    if ((self)->lock != NULL) PyThread_release_lock((self)->lock); \
    Py_END_ALLOW_THREADS                                           \
  } while (0)

/* One library call on an open object, the whole of it: begin (raises on a closed object), run
 * `call` (an expression giving attnkit_status*) without the GIL and under the object's lock, end,
 * and raise the status if there is one. Leaves 0 in `rc` on success, -1 with an exception set. */
#define ATTNKIT_PY_RUN(rc, self, call)             \
  do {                                             \
    attnkit_status* run_status_ = NULL;            \
    (rc) = akpy_handle_begin(self);                \
    if ((rc) == 0) {                               \
      ATTNKIT_PY_CALL(self, run_status_ = (call)); \
      akpy_handle_end(self);                       \
      if (run_status_ != NULL) {                   \
        akpy_raise_status(run_status_);            \
        (rc) = -1;                                 \
      }                                            \
    }                                              \
  } while (0)

/* A new wrapper of `type` with no C object yet; NULL with an exception set. */
Handle* akpy_handle_alloc(PyTypeObject* type, const char* kind, void (*free_fn)(void*),
                          int needs_lock);

/* A C object created from a config argument (attnkit_pb2 message, bytes or textproto): `create`
 * calls the object's _create or _create_from_text; it runs with the GIL released. */
typedef attnkit_status* (*CreateFromConfig)(const ConfigArg* config, void** out);
PyObject* akpy_handle_new_from_config(PyTypeObject* type, PyObject* args, PyObject* kwargs,
                                      const char* kind, void (*free_fn)(void*), int needs_lock,
                                      CreateFromConfig create);

void akpy_handle_dealloc(Handle* self);
PyObject* akpy_handle_close(Handle* self, PyObject* unused);
extern PyGetSetDef akpy_handle_getset[];

/* Defines the type object `c_name` of a wrapper: Handle layout, `closed`, weak references. */
#define ATTNKIT_PY_HANDLE_TYPE(c_name, py_name, doc, methods, new_fn)       \
  PyTypeObject c_name = {                                                   \
      PyVarObject_HEAD_INIT(NULL, 0).tp_name = "attnkit._attnkit." py_name, \
      .tp_basicsize = sizeof(Handle),                                       \
      .tp_dealloc = (destructor)akpy_handle_dealloc,                        \
      .tp_flags = Py_TPFLAGS_DEFAULT,                                       \
      .tp_doc = doc,                                                        \
      .tp_weaklistoffset = offsetof(Handle, weakrefs),                      \
      .tp_methods = methods,                                                \
      .tp_getset = akpy_handle_getset,                                      \
      .tp_new = new_fn,                                                     \
  }

/* The types, one per object file; module.c adds them to the module. */
extern PyTypeObject akpy_SessionType;         /* session.c */
extern PyTypeObject akpy_EvictionPolicyType;  /* eviction.c */
extern PyTypeObject akpy_SparseAttentionType; /* sparse.c */
extern PyTypeObject akpy_VisualPrunerType;    /* visual.c */
extern PyTypeObject akpy_VisualSelectionType; /* visual.c */

#endif /* ATTNKIT_PY_H_ */
