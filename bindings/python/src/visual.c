/* attnkit._attnkit.VisualPruner and VisualSelection over attnkit_visual_pruner and
 * attnkit_visual_selection (thread-safe C objects: no lock). */
#include "attnkit_py.h"

static void pruner_free(void* p) { attnkit_visual_pruner_free((attnkit_visual_pruner*)p); }
static void selection_free(void* p) { attnkit_visual_selection_free((attnkit_visual_selection*)p); }

static const attnkit_visual_selection* selection_of(Handle* self) {
  return (const attnkit_visual_selection*)self->handle;
}

/* ------------------------------------------------------------------------------------------------
 * VisualSelection (made by VisualPruner.select, never from Python) */

static PyObject* selection_num_images(Handle* self, PyObject* unused) {
  if (akpy_handle_begin(self) != 0) return NULL;
  size_t n = attnkit_visual_selection_num_images(selection_of(self));
  akpy_handle_end(self);
  return PyLong_FromSize_t(n);
}

static PyObject* selection_image_size(Handle* self, PyObject* args) {
  Py_ssize_t image;
  if (!PyArg_ParseTuple(args, "n:image_size", &image)) return NULL;
  if (akpy_handle_begin(self) != 0) return NULL;
  size_t n = image < 0 ? 0 : attnkit_visual_selection_image_size(selection_of(self), (size_t)image);
  akpy_handle_end(self);
  return PyLong_FromSize_t(n);
}

static PyObject* selection_indices(Handle* self, PyObject* args) {
  Py_ssize_t image;
  if (!PyArg_ParseTuple(args, "n:indices", &image)) return NULL;
  if (akpy_handle_begin(self) != 0) return NULL;
  const attnkit_visual_selection* selection = selection_of(self);
  PyObject* result;
  if (image < 0 || (size_t)image >= attnkit_visual_selection_num_images(selection)) {
    result = PyErr_Format(PyExc_IndexError, "image %zd out of range", image);
  } else {
    size_t kept = attnkit_visual_selection_num_kept(selection, (size_t)image);
    const int64_t* indices = attnkit_visual_selection_indices(selection, (size_t)image);
    result = akpy_int64_bytes(indices, indices == NULL ? 0 : kept);
  }
  akpy_handle_end(self);
  return result;
}

/* A bytearray of the array's int64 values; frees `array`. */
static PyObject* take_int64_array(attnkit_int64_array* array) {
  PyObject* result = akpy_int64_bytes(array->data, array->size);
  attnkit_int64_array_free(array);
  return result;
}

static PyObject* selection_flat_indices(Handle* self, PyObject* unused) {
  attnkit_int64_array* flat = NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self, attnkit_visual_selection_flat_indices(selection_of(self), &flat));
  return rc != 0 ? NULL : take_int64_array(flat);
}

static PyObject* selection_kept_positions(Handle* self, PyObject* args) {
  Py_buffer mask;
  if (!PyArg_ParseTuple(args, "y*:kept_positions", &mask)) return NULL;
  attnkit_int64_array* positions = NULL;
  int rc;
  ATTNKIT_PY_RUN(rc, self,
                 attnkit_visual_selection_kept_positions(
                     selection_of(self), (const uint8_t*)mask.buf, (size_t)mask.len, &positions));
  PyBuffer_Release(&mask);
  return rc != 0 ? NULL : take_int64_array(positions);
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
    {"close", (PyCFunction)akpy_handle_close, METH_NOARGS, "Frees the selection; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(akpy_VisualSelectionType, "VisualSelection",
                       "attnkit_visual_selection (returned by VisualPruner.select).",
                       selection_methods, NULL);

/* ------------------------------------------------------------------------------------------------
 * VisualPruner */

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
  return akpy_handle_new_from_config(type, args, kwargs, "VisualPruner", pruner_free, 0,
                                     pruner_create_from_config);
}

static PyObject* wrap_selection(attnkit_visual_selection* selection) {
  Handle* wrapper =
      akpy_handle_alloc(&akpy_VisualSelectionType, "VisualSelection", selection_free, 0);
  if (wrapper == NULL) {
    attnkit_visual_selection_free(selection);
    return NULL;
  }
  wrapper->handle = selection;
  return (PyObject*)wrapper;
}

/* The selection of one select() call: the ragged variant when `sizes` is not NULL. */
static attnkit_status* pruner_run(const attnkit_visual_pruner* pruner, const TensorArg* t,
                                  const int64_t* sizes, size_t num_images,
                                  attnkit_visual_selection** selection) {
  if (sizes != NULL) {
    return attnkit_visual_pruner_select_ragged(pruner, akpy_tensor_ptr(&t[0]), &t[1].tensor, sizes,
                                               num_images, akpy_tensor_ptr(&t[2]), selection);
  }
  return attnkit_visual_pruner_select(pruner, akpy_tensor_ptr(&t[0]), &t[1].tensor,
                                      akpy_tensor_ptr(&t[2]), selection);
}

/* select(image_embeds, image_features, text_embeds, image_sizes=None): the ragged variant when
 * image_sizes is a sequence. */
static PyObject* pruner_select(Handle* self, PyObject* args) {
  static const TensorSpec specs[] = {
      {"image_embeds", 0, 1}, {"image_features", 0, 0}, {"text_embeds", 0, 1}};
  enum { kCount = sizeof(specs) / sizeof(specs[0]) };
  PyObject *objs[kCount], *sizes_obj = Py_None;
  if (!PyArg_ParseTuple(args, "OOO|O:select", &objs[0], &objs[1], &objs[2], &sizes_obj)) {
    return NULL;
  }
  int64_t* sizes = NULL;
  size_t num_images = 0;
  if (akpy_int64_list(sizes_obj, "image_sizes: expected a sequence of ints", &sizes, &num_images) !=
      0) {
    return NULL;
  }
  /* A sequence gives the ragged variant even when empty (sizes then points at one spare slot). */
  TensorArg t[kCount];
  attnkit_visual_selection* selection = NULL;
  int rc = akpy_tensors_from_objects(t, objs, specs, kCount);
  if (rc == 0) {
    ATTNKIT_PY_RUN(
        rc, self,
        pruner_run((const attnkit_visual_pruner*)self->handle, t, sizes, num_images, &selection));
  }
  akpy_tensors_release(t, kCount);
  PyMem_Free(sizes);
  return rc != 0 ? NULL : wrap_selection(selection);
}

static PyMethodDef pruner_methods[] = {
    {"select", (PyCFunction)pruner_select, METH_VARARGS,
     "select(image_embeds, image_features, text_embeds, image_sizes=None) -> VisualSelection."},
    {"close", (PyCFunction)akpy_handle_close, METH_NOARGS, "Frees the pruner; idempotent."},
    {NULL, NULL, 0, NULL},
};

ATTNKIT_PY_HANDLE_TYPE(akpy_VisualPrunerType, "VisualPruner",
                       "VisualPruner(config: bytes | str): attnkit_visual_pruner.", pruner_methods,
                       pruner_new);
