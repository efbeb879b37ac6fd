/** @file
 * attnkit C ABI: status, versions, library-owned buffers and the tensor convention.
 *
 * Conventions for every attnkit_* function:
 * - A fallible call returns attnkit_status*: NULL on success, otherwise a status the caller owns
 * and frees with attnkit_status_free(). No error state is kept per thread.
 * - Inputs are borrowed for the duration of the call only; outputs are written into caller tensors
 * or returned as library-owned objects with their own free function. Every *_free(NULL) is a no-op.
 * - Tensors cross as DLPack DLTensor (dlpack/dlpack.h), borrowed: data may be CPU (or CUDA where
 * the library was built with it), dtype float32, float16 or bfloat16 unless a function says
 * otherwise, any strides (strides == NULL means compact row-major). byte_offset is honoured.
 * Every descriptor is checked before its data is touched: rank 0 to 8, no negative size or
 * stride, and the element count, the compact byte size of the shape and byte_offset + the bytes
 * the strides reach all below 2^63 (INVALID_ARGUMENT naming the argument otherwise). A descriptor
 * that stays within those bounds but points at memory the caller does not own cannot be detected.
 * An output's strides must not overlap, checked by a rule that is sufficient, not necessary:
 * sorted by stride, each dimension's stride must step past the largest offset the smaller-stride
 * dimensions reach (every compact, transposed, permuted or sliced layout passes; an interleaving
 * that never overlaps but does not nest, e.g. shape [2, 3] with strides [3, 2], is refused).
 * - No call aborts or throws into the host: every failure, an internal one included, comes back as
 * a status (RESOURCE_EXHAUSTED when memory runs out: an allocation of attnkit's or of ATen's that
 * fails; the message names the entry point and keeps ATen's). One case is outside attnkit's reach:
 * OpenBLAS (the BLAS under Debian's libtorch) retries forever when it cannot map a work buffer, so
 * a host that caps its address space (RLIMIT_AS, `ulimit -v`) must leave room for those buffers
 * (docs/DEPENDENCIES.md).
 * - Handles (every object the library returns: sessions, policies, selections, statuses, buffers,
 * arrays) are checked before use against a registry of the live ones: a handle already freed, one
 * of another kind or a pointer attnkit never returned is INVALID_ARGUMENT naming the argument ("not
 * a live attnkit_session"), freeing it again is a no-op, and the getters without a status return
 * their empty value (0, NULL; ATTNKIT_UNKNOWN for attnkit_status_get_code(), and for
 * attnkit_status_get_message() a message saying the status is not live). Only a freed
 * handle whose address the allocator has since given to a new object of the same kind passes as
 * that new object.
 * - Threads: one object is used by one thread at a time; distinct objects are independent (any
 * number of threads, each with its own objects). Immutable objects may be shared by threads at
 * once where their header says so (attnkit_sparse_attention, attnkit_visual_pruner,
 * attnkit_visual_selection, attnkit_kept_positions reads). The functions without an object
 * (configs, attnkit_tensor_check, versions) and the status getters may be called from any thread at
 * once. tests/capi/threads_test.cc checks this, under ThreadSanitizer with scripts/tsan.sh.
 */
#ifndef ATTNKIT_ATTNKIT_COMMON_H_
#define ATTNKIT_ATTNKIT_COMMON_H_

#include <stddef.h>
#include <stdint.h>

#include <dlpack/dlpack.h>

/** Marks the functions of the C ABI: exported from the shared library (dllexport while building
 * it and dllimport outside on Windows, default visibility elsewhere). */
#if defined(_WIN32)
#if defined(ATTNKIT_BUILDING_LIBRARY)
#define ATTNKIT_API __declspec(dllexport)
#else
#define ATTNKIT_API __declspec(dllimport)
#endif
#else
#define ATTNKIT_API __attribute__((visibility("default")))
#endif

/** Marks a deprecated declaration; `hint` is shown in the compiler's warning (GCC and Clang; empty
 * elsewhere). */
#if defined(__GNUC__) || defined(__clang__)
#define ATTNKIT_DEPRECATED(hint) __attribute__((deprecated(hint)))
#else
#define ATTNKIT_DEPRECATED(hint)
#endif

/** The ABI major version this header describes; attnkit_abi_version() returns the library's. */
#define ATTNKIT_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

/** Status codes, numbered like absl::StatusCode (and grpc/google.rpc). */
typedef enum attnkit_status_code {
  ATTNKIT_OK = 0,                  /**< Success (calls return NULL, not a status, then). */
  ATTNKIT_CANCELLED = 1,           /**< The operation was cancelled. */
  ATTNKIT_UNKNOWN = 2,             /**< An unknown error. */
  ATTNKIT_INVALID_ARGUMENT = 3,    /**< An argument is invalid; the message names it. */
  ATTNKIT_DEADLINE_EXCEEDED = 4,   /**< A deadline expired. */
  ATTNKIT_NOT_FOUND = 5,           /**< Something requested was not found. */
  ATTNKIT_ALREADY_EXISTS = 6,      /**< Something to create already exists. */
  ATTNKIT_PERMISSION_DENIED = 7,   /**< The caller may not do this. */
  ATTNKIT_RESOURCE_EXHAUSTED = 8,  /**< A resource (e.g. memory) ran out. */
  ATTNKIT_FAILED_PRECONDITION = 9, /**< The object is not in the state the call needs. */
  ATTNKIT_ABORTED = 10,            /**< The operation was aborted. */
  ATTNKIT_OUT_OF_RANGE = 11,       /**< A value is out of its valid range. */
  ATTNKIT_UNIMPLEMENTED = 12,      /**< The operation is not implemented or supported. */
  ATTNKIT_INTERNAL = 13,           /**< An internal error. */
  ATTNKIT_UNAVAILABLE = 14,        /**< The service is unavailable. */
  ATTNKIT_DATA_LOSS = 15,          /**< Unrecoverable data loss or corruption. */
  ATTNKIT_UNAUTHENTICATED = 16     /**< The caller is not authenticated. */
} attnkit_status_code;

/** An error: a code and a message. Owned by the caller of the function that returned it. */
typedef struct attnkit_status attnkit_status;

/** The code of `status`; ATTNKIT_OK for NULL. Thread-safe. */
ATTNKIT_API attnkit_status_code attnkit_status_get_code(const attnkit_status* status);

/** The message of `status` (NUL-terminated, UTF-8), owned by `status` and valid until it is freed;
 * "" for NULL; for a pointer that is not a live status, a static message saying so ("status: not
 * a live attnkit_status ..."). Thread-safe. */
ATTNKIT_API const char* attnkit_status_get_message(const attnkit_status* status);

/** Frees `status`. NULL is a no-op. */
ATTNKIT_API void attnkit_status_free(attnkit_status* status);

/** The ABI major version of the loaded library. Bindings compare it with ATTNKIT_ABI_VERSION. */
ATTNKIT_API int32_t attnkit_abi_version(void);

/** The library version, e.g. "0.1.0"; a static string. */
ATTNKIT_API const char* attnkit_version_string(void);

/** Sets how many threads the library's computing calls use: 1 to 1024, or 0 (the default) for the
 * OpenMP default of the calling thread (OMP_NUM_THREADS, else one per core). Every entry point that
 * computes (attend, sparse attention, masks, visual selection, eviction observe and select) runs
 * its kernels and the BLAS products under it with that many threads, then gives the calling thread
 * its own OpenMP setting back. Process-wide; any thread may call it. INVALID_ARGUMENT naming
 * num_threads outside [0, 1024]. */
ATTNKIT_API attnkit_status* attnkit_set_num_threads(int32_t num_threads);

/** The value last set with attnkit_set_num_threads() (0: the default). */
ATTNKIT_API int32_t attnkit_get_num_threads(void);

/** A library-owned byte buffer (serialized protos, text). Free with attnkit_buffer_free(). */
typedef struct attnkit_buffer {
  uint8_t* data; /**< The bytes (`size` of them). */
  size_t size;   /**< The number of bytes. */
} attnkit_buffer;

/** Frees a buffer's data and the buffer. NULL is a no-op. */
ATTNKIT_API void attnkit_buffer_free(attnkit_buffer* buffer);

/** A library-owned array of int64 (kept positions, indices). Free with attnkit_int64_array_free().
 */
typedef struct attnkit_int64_array {
  int64_t* data; /**< The values (`size` of them). */
  size_t size;   /**< The number of values. */
} attnkit_int64_array;

/** Frees an array's data and the array. NULL is a no-op. */
ATTNKIT_API void attnkit_int64_array_free(attnkit_int64_array* array);

/** Checks `tensor` the way every entry point does (non-NULL, data non-NULL unless empty, supported
 * dtype and device, rank `expected_rank` when >= 0, no overlapping strides when `is_output`);
 * `name` is used in the message. Returns NULL when it would be accepted. For tests and bindings. */
ATTNKIT_API attnkit_status* attnkit_tensor_check(const DLTensor* tensor, const char* name,
                                                 int32_t expected_rank, int32_t is_output);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_ATTNKIT_COMMON_H_ */
