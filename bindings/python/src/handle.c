/* The wrapper every C object shares: lifetime (close(), close during a call of another thread,
 * dealloc), the lock of one-thread-at-a-time objects, and creation from a config. */
#include "attnkit_py.h"

static void handle_free_now(Handle* self) {
  if (self->handle != NULL && self->free_fn != NULL) {
    void* handle = self->handle;
    self->handle = NULL;
    Py_BEGIN_ALLOW_THREADS self->free_fn(handle);
    Py_END_ALLOW_THREADS
  }
  self->handle = NULL;
}

int akpy_handle_begin(Handle* self) {
  if (self->handle == NULL || self->closing) {
    char message[128];
    PyOS_snprintf(message, sizeof(message), "%s: used after close()", self->kind);
    akpy_raise_code(ATTNKIT_FAILED_PRECONDITION, message);
    return -1;
  }
  ++self->active;
  return 0;
}

void akpy_handle_end(Handle* self) {
  if (--self->active == 0 && self->closing) handle_free_now(self);
}

Handle* akpy_handle_alloc(PyTypeObject* type, const char* kind, void (*free_fn)(void*),
                          int needs_lock) {
  Handle* self = (Handle*)type->tp_alloc(type, 0);
  if (self == NULL) return NULL;
  self->kind = kind;
  self->free_fn = free_fn;
  if (needs_lock) {
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
      Py_DECREF(self);
      PyErr_NoMemory();
      return NULL;
    }
  }
  return self;
}

PyObject* akpy_handle_new_from_config(PyTypeObject* type, PyObject* args, PyObject* kwargs,
                                      const char* kind, void (*free_fn)(void*), int needs_lock,
                                      CreateFromConfig create) {
  static char* keywords[] = {"config", NULL};
  char format[64];
  PyObject* config_obj;
  PyOS_snprintf(format, sizeof(format), "O:%s", kind);
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, &config_obj)) return NULL;
  ConfigArg config;
  if (akpy_config_from_object(&config, config_obj) != 0) return NULL;
  Handle* self = akpy_handle_alloc(type, kind, free_fn, needs_lock);
  if (self == NULL) {
    akpy_config_release(&config);
    return NULL;
  }
  void* handle = NULL;
  attnkit_status* status;
  Py_BEGIN_ALLOW_THREADS status = create(&config, &handle);
  Py_END_ALLOW_THREADS akpy_config_release(&config);
  if (status != NULL) {
    Py_DECREF(self);
    return akpy_raise_status(status);
  }
  self->handle = handle;
  return (PyObject*)self;
}

void akpy_handle_dealloc(Handle* self) {
  /* A call in flight holds a reference, so nothing is active here. */
  if (self->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject*)self);
  handle_free_now(self);
  if (self->lock != NULL) PyThread_free_lock(self->lock);
  Py_TYPE(self)->tp_free((PyObject*)self);
}

PyObject* akpy_handle_close(Handle* self, PyObject* unused) {
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

PyGetSetDef akpy_handle_getset[] = {
    {"closed", (getter)handle_get_closed, NULL, "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
