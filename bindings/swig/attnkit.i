/* attnkit.i: the language-neutral part of every SWIG binding (C#, Java, Go).
 *
 * It wraps the C headers only, behind an allow-list, and maps each C ABI argument shape onto a
 * named typemap contract. A language's module file declares %module, defines the contracts (see
 * the list below) and then does `%include "attnkit.i"`:
 *
 *   ATTNKIT_HANDLE(TYPE)          opaque object pointers TYPE* / const TYPE* as raw handles (the
 *                                 hand-written layer owns them, e.g. in SafeHandles)
 *   ATTNKIT_HANDLE_OUT(TYPE)      TYPE** out: the new object of a _create/_select call
 *   attnkit_status*               return of every fallible call -> the language's error, status freed
 *   attnkit_status* ATTNKIT_STATUS_HANDLE   the status accessors' own argument (raw handle)
 *   (const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE)     borrowed bytes in
 *   (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE)       borrowed UTF-8 text in
 *   (const int64_t* ATTNKIT_INT64S, size_t ATTNKIT_INT64S_SIZE) borrowed int64 array in (NULL ok)
 *   attnkit_buffer** ATTNKIT_BUFFER_OUT          library-owned bytes out (copied, then freed)
 *   attnkit_int64_array** ATTNKIT_INT64_ARRAY_OUT library-owned int64 array out (copied, freed)
 *   const int64_t* ATTNKIT_BORROWED_INT64S       a returned pointer into a library-owned object
 *   const DLTensor* / DLTensor*                  tensors: a language tensor view turned into an
 *                                                attnkit_swig_tensor_desc (attnkit_swig_shim.h) and
 *                                                from it into a DLTensor on the wrapper's stack
 *   size_t* ATTNKIT_SIZE_OUT                     a size out-param
 *   TYPE* OUTPUT                                 scalar out-params (SWIG's typemaps.i)
 */

%include <typemaps.i>

/* Fixed-width integers by their own names (stdint.i would typedef int64_t to long long, whose
 * casts clash with glibc's long on LP64), mapped onto the language's 8/16/32/64-bit types. */
%apply signed char { int8_t };
%apply unsigned char { uint8_t };
%apply short { int16_t };
%apply unsigned short { uint16_t };
%apply int { int32_t };
%apply unsigned int { uint32_t };
%apply long long { int64_t };
%apply unsigned long long { uint64_t };
%apply long long* OUTPUT { int64_t* OUTPUT };

%{
#include "attnkit/attnkit.h"
#include "attnkit/attnkit_sparse.h"
#include "attnkit/attnkit_visual.h"
#include "attnkit_swig_shim.h"
%}

/* ---- allow-list: nothing is wrapped unless named below ---- */
%rename("$ignore", regextarget=1, fullname=1) "";
%define ATTNKIT_EXPOSE(NAME)
%rename("%s") NAME;
%enddef

/* ATTNKIT_API and ATTNKIT_DEPRECATED expand to GNU attributes, which SWIG's parser does not read. */
#define __attribute__(x)

/* ---- argument shapes of the C ABI mapped onto the contracts ---- */
%apply (const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE) {
  (const void* config, size_t size),
  (const void* data, size_t size),
  (const void* blob, size_t size)
};
%apply (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) { (const char* text, size_t size) };
%apply (const int64_t* ATTNKIT_INT64S, size_t ATTNKIT_INT64S_SIZE) {
  (const int64_t* lengths, size_t num_lengths),
  (const int64_t* image_sizes, size_t num_images),
  (const int64_t* new_tokens, size_t num_sequences)
};
%apply (const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE) {
  (const uint8_t* image_token_mask, size_t prompt_length)
};
%apply attnkit_buffer** ATTNKIT_BUFFER_OUT { attnkit_buffer** out };
%apply attnkit_int64_array** ATTNKIT_INT64_ARRAY_OUT { attnkit_int64_array** out };
%apply attnkit_status* ATTNKIT_STATUS_HANDLE {
  attnkit_status* status,
  const attnkit_status* status
};
%apply int64_t* OUTPUT {
  int64_t* out,
  int64_t* mask_heads,
  int64_t* q_blocks,
  int64_t* k_blocks
};
%apply double* OUTPUT { double* density };
%apply size_t* ATTNKIT_SIZE_OUT { size_t* size };
%apply const int64_t* ATTNKIT_BORROWED_INT64S {
  const int64_t* attnkit_kept_positions_row,
  const int64_t* attnkit_visual_selection_indices
};

/* Library-owned results the binding reads and then frees with their free function. */
ATTNKIT_HANDLE(attnkit_buffer)
ATTNKIT_HANDLE(attnkit_int64_array)
%define ATTNKIT_OBJECT(TYPE)
ATTNKIT_HANDLE(TYPE)
ATTNKIT_HANDLE_OUT(TYPE)
%enddef
ATTNKIT_OBJECT(attnkit_session)
ATTNKIT_OBJECT(attnkit_eviction_policy)
ATTNKIT_OBJECT(attnkit_kept_positions)
ATTNKIT_OBJECT(attnkit_sparse_attention)
ATTNKIT_OBJECT(attnkit_visual_pruner)
ATTNKIT_OBJECT(attnkit_visual_selection)

/* ---- the exposed API ---- */
/* The header's ABI version: the version a binding expects (languages may make it a constant). */
ATTNKIT_EXPOSE(ATTNKIT_ABI_VERSION)
ATTNKIT_EXPOSE(attnkit_status_code)
ATTNKIT_EXPOSE(attnkit_config_kind)
ATTNKIT_EXPOSE(attnkit_status_get_code)
ATTNKIT_EXPOSE(attnkit_status_get_message)
ATTNKIT_EXPOSE(attnkit_status_free)
ATTNKIT_EXPOSE(attnkit_abi_version)
ATTNKIT_EXPOSE(attnkit_version_string)
ATTNKIT_EXPOSE(attnkit_buffer_free)
ATTNKIT_EXPOSE(attnkit_int64_array_free)
ATTNKIT_EXPOSE(attnkit_config_validate)
ATTNKIT_EXPOSE(attnkit_config_validate_text)
ATTNKIT_EXPOSE(attnkit_config_text_to_binary)
ATTNKIT_EXPOSE(attnkit_config_binary_to_text)
ATTNKIT_EXPOSE(attnkit_tensor_check)
ATTNKIT_EXPOSE(attnkit_set_num_threads)
ATTNKIT_EXPOSE(attnkit_get_num_threads)

ATTNKIT_EXPOSE(attnkit_session_create)
ATTNKIT_EXPOSE(attnkit_session_create_from_text)
ATTNKIT_EXPOSE(attnkit_session_free)
ATTNKIT_EXPOSE(attnkit_session_attend)
ATTNKIT_EXPOSE(attnkit_session_attend_ragged)
ATTNKIT_EXPOSE(attnkit_session_reset_sequence)
ATTNKIT_EXPOSE(attnkit_session_observe)
ATTNKIT_EXPOSE(attnkit_session_stats)
ATTNKIT_EXPOSE(attnkit_session_bytes_held)
ATTNKIT_EXPOSE(attnkit_session_positions)
ATTNKIT_EXPOSE(attnkit_session_next_position)
ATTNKIT_EXPOSE(attnkit_session_reset)
ATTNKIT_EXPOSE(attnkit_session_save)
ATTNKIT_EXPOSE(attnkit_session_load)
ATTNKIT_EXPOSE(attnkit_session_fork)

ATTNKIT_EXPOSE(attnkit_eviction_policy_create)
ATTNKIT_EXPOSE(attnkit_eviction_policy_create_from_text)
ATTNKIT_EXPOSE(attnkit_eviction_policy_free)
ATTNKIT_EXPOSE(attnkit_eviction_policy_observe)
ATTNKIT_EXPOSE(attnkit_eviction_policy_select)
ATTNKIT_EXPOSE(attnkit_eviction_policy_needs_keys)
ATTNKIT_EXPOSE(attnkit_eviction_policy_per_head)
ATTNKIT_EXPOSE(attnkit_eviction_policy_layer_budget)
ATTNKIT_EXPOSE(attnkit_eviction_policy_reset)
ATTNKIT_EXPOSE(attnkit_kept_positions_num_rows)
ATTNKIT_EXPOSE(attnkit_kept_positions_row)
ATTNKIT_EXPOSE(attnkit_kept_positions_free)

ATTNKIT_EXPOSE(attnkit_sparse_attention_create)
ATTNKIT_EXPOSE(attnkit_sparse_attention_create_from_text)
ATTNKIT_EXPOSE(attnkit_sparse_attention_free)
ATTNKIT_EXPOSE(attnkit_sparse_attention_mask_shape)
ATTNKIT_EXPOSE(attnkit_sparse_attention_build_mask)
ATTNKIT_EXPOSE(attnkit_sparse_attention_attention)
ATTNKIT_EXPOSE(attnkit_sparse_attention_prefill)

ATTNKIT_EXPOSE(attnkit_visual_pruner_create)
ATTNKIT_EXPOSE(attnkit_visual_pruner_create_from_text)
ATTNKIT_EXPOSE(attnkit_visual_pruner_free)
ATTNKIT_EXPOSE(attnkit_visual_pruner_select)
ATTNKIT_EXPOSE(attnkit_visual_pruner_select_ragged)
ATTNKIT_EXPOSE(attnkit_visual_selection_num_images)
ATTNKIT_EXPOSE(attnkit_visual_selection_image_size)
ATTNKIT_EXPOSE(attnkit_visual_selection_num_kept)
ATTNKIT_EXPOSE(attnkit_visual_selection_indices)
ATTNKIT_EXPOSE(attnkit_visual_selection_flat_indices)
ATTNKIT_EXPOSE(attnkit_visual_selection_kept_positions)
ATTNKIT_EXPOSE(attnkit_visual_selection_free)

/* Enum constants follow their enum's exposure. */
%rename("%s", regextarget=1) "^ATTNKIT_[A-Z_]+$";

/* ---- the headers ---- */
%include "attnkit/attnkit_common.h"
%include "attnkit/attnkit_config.h"
%include "attnkit/attnkit_session.h"
%include "attnkit/attnkit_eviction.h"
%include "attnkit/attnkit_sparse.h"
%include "attnkit/attnkit_visual.h"
