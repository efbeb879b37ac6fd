/* attnkit._attnkit.Session over attnkit_session (one thread at a time: the wrapper has a lock). */
#include "attnkit_py.h"

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
  return akpy_handle_new_from_config(type, args, kwargs, "Session", session_free, 1,
                                     session_create_from_config);
}

static attnkit_session* session_of(Handle* self) { return (attnkit_session*)self->handle; }

static PyObject* session_attend(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {{"q", 0, 0}, {"k", 0, 0}, {"v", 0, 0}, {"out", 1, 0}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  int layer;
  PyObject* objs[kCount];
  if (!PyArg_ParseTuple(args, "iOOOO:attend", &layer, &objs[0], &objs[1], &objs[2], &objs[3])) {
    return NULL;
  }
  TensorArg t[kCount];
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(rc, self,
                   attnkit_session_attend(session_of(self), layer, &t[0].tensor, &t[1].tensor,
                                          &t[2].tensor, &t[3].tensor));
  }
  akpy_tensors_release(t, kCount);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* session_attend_ragged(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {{"q", 0, 0}, {"k", 0, 0}, {"v", 0, 0}, {"out", 1, 0}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  int layer;
  PyObject* objs[kCount];
  PyObject* counts_obj;
  if (!PyArg_ParseTuple(args, "iOOOOO:attend_ragged", &layer, &objs[0], &objs[1], &objs[2],
                        &objs[3], &counts_obj)) {
    return NULL;
  }
  int64_t* counts = NULL;
  size_t num_counts = 0;
  if (akpy_int64_list(counts_obj, "new_tokens: expected a sequence of ints", &counts,
                      &num_counts) != 0) {
    return NULL;
  }
  TensorArg t[kCount];
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(
        rc, self,
        attnkit_session_attend_ragged(session_of(self), layer, &t[0].tensor, &t[1].tensor,
                                      &t[2].tensor, &t[3].tensor, counts, num_counts));
  }
  akpy_tensors_release(t, kCount);
  PyMem_Free(counts);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* session_reset_sequence(Handle* self, PyObject* args) {
  int sequence;
  if (!PyArg_ParseTuple(args, "i:reset_sequence", &sequence)) return NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_reset_sequence(session_of(self), sequence));
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* session_observe(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {{"q", 0, 0}, {"out", 1, 1}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  int layer;
  PyObject* objs[kCount];
  if (!PyArg_ParseTuple(args, "iOO:observe", &layer, &objs[0], &objs[1])) return NULL;
  TensorArg t[kCount];
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(rc, self,
                   attnkit_session_observe(session_of(self), layer, akpy_tensor_ptr(&t[0]),
                                           (DLTensor*)akpy_tensor_ptr(&t[1])));
  }
  akpy_tensors_release(t, kCount);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* session_stats(Handle* self, PyObject* unused) {
  attnkit_buffer* buffer = NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_stats(session_of(self), &buffer));
  if (rc != 0) return NULL;
  PyObject* bytes = PyBytes_FromStringAndSize((const char*)buffer->data, (Py_ssize_t)buffer->size);
  attnkit_buffer_free(buffer);
  return bytes;
}

static PyObject* session_bytes_held(Handle* self, PyObject* unused) {
  int64_t held = 0;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_bytes_held(session_of(self), &held));
  return rc != 0 ? NULL : PyLong_FromLongLong(held);
}

static PyObject* session_positions(Handle* self, PyObject* args) {
  int layer, sequence, kv_head;
  if (!PyArg_ParseTuple(args, "iii:positions", &layer, &sequence, &kv_head)) return NULL;
  attnkit_int64_array* positions = NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self,
                 attnkit_session_positions(session_of(self), layer, sequence, kv_head, &positions));
  if (rc != 0) return NULL;
  PyObject* result = akpy_int64_bytes(positions->data, positions->size);
  attnkit_int64_array_free(positions);
  return result;
}

static PyObject* session_next_position(Handle* self, PyObject* args) {
  int sequence;
  if (!PyArg_ParseTuple(args, "i:next_position", &sequence)) return NULL;
  int64_t position = 0;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_next_position(session_of(self), sequence, &position));
  return rc != 0 ? NULL : PyLong_FromLongLong(position);
}

static PyObject* session_reset(Handle* self, PyObject* unused) {
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_reset(session_of(self)));
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* session_save(Handle* self, PyObject* unused) {
  attnkit_buffer* buffer = NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_save(session_of(self), &buffer));
  if (rc != 0) return NULL;
  PyObject* bytes = PyBytes_FromStringAndSize((const char*)buffer->data, (Py_ssize_t)buffer->size);
  attnkit_buffer_free(buffer);
  return bytes;
}

static PyObject* session_load(Handle* self, PyObject* args) {
  Py_buffer blob;
  if (!PyArg_ParseTuple(args, "y*:load", &blob)) return NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_load(session_of(self), blob.buf, (size_t)blob.len));
  PyBuffer_Release(&blob);
  if (rc != 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject* session_fork(Handle* self, PyObject* unused) {
  Handle* fork = akpy_handle_alloc(Py_TYPE(self), "Session", session_free, 1);
  if (fork == NULL) return NULL;
  attnkit_session* forked = NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_session_fork(session_of(self), &forked));
  if (rc != 0) {
    Py_DECREF(fork);
    return NULL;
  }
  fork->handle = forked;
  return (PyObject*)fork;
}

static PyMethodDef session_methods[] = {
    {"attend", (PyCFunction)session_attend, METH_VARARGS,
     "attend(layer, q, k, v, out): one attention call; tensors are borrowed for the call."},
    {"attend_ragged", (PyCFunction)session_attend_ragged, METH_VARARGS,
     "attend_ragged(layer, q, k, v, out, new_tokens): a ragged call (sequence b brings "
     "new_tokens[b] of the tokens); tensors are borrowed for the call."},
    {"reset_sequence", (PyCFunction)session_reset_sequence, METH_VARARGS,
     "reset_sequence(sequence): retires a sequence, freeing its pages; between steps."},
    {"observe", (PyCFunction)session_observe, METH_VARARGS,
     "observe(layer, q, out or None): an observe-only call; tensors are borrowed for the call."},
    {"stats", (PyCFunction)session_stats, METH_NOARGS, "Serialized attnkit.v1.SessionStats."},
    {"bytes_held", (PyCFunction)session_bytes_held, METH_NOARGS, "Bytes of KV pages in use."},
    {"positions", (PyCFunction)session_positions, METH_VARARGS,
     "positions(layer, sequence, kv_head) -> bytearray of int64 original positions."},
    {"next_position", (PyCFunction)session_next_position, METH_VARARGS,
     "next_position(sequence) -> the RoPE position of the next token."},
    {"reset", (PyCFunction)session_reset, METH_NOARGS, "Drops every cached token."},
    {"save", (PyCFunction)session_save, METH_NOARGS,
     "save() -> bytes: the whole state as a versioned, checksummed blob."},
    {"load", (PyCFunction)session_load, METH_VARARGS,
     "load(blob): replaces the state with a save() blob of a session with the same config."},
    {"fork", (PyCFunction)session_fork, METH_NOARGS,
     "fork() -> Session: a new session with this one's config and state (pages copy-on-write)."},
    {"close", (PyCFunction)akpy_handle_close, METH_NOARGS, "Frees the session; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(akpy_SessionType, "Session",
                       "Session(config: bytes | str): attnkit_session.", session_methods,
                       session_new);
