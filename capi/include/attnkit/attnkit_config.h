/** @file
 * attnkit C ABI: configuration messages (attnkit.v1, see proto/attnkit/v1) as bytes or textproto.
 */
#ifndef ATTNKIT_ATTNKIT_CONFIG_H_
#define ATTNKIT_ATTNKIT_CONFIG_H_

#include "attnkit/attnkit_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Which message a config holds. */
typedef enum attnkit_config_kind {
  ATTNKIT_CONFIG_EVICTION = 0,         /**< attnkit.v1.EvictionConfig */
  ATTNKIT_CONFIG_SPARSE_ATTENTION = 1, /**< attnkit.v1.SparseAttentionConfig */
  ATTNKIT_CONFIG_VISUAL_PRUNING = 2,   /**< attnkit.v1.VisualPruningConfig */
  ATTNKIT_CONFIG_SESSION = 3           /**< attnkit.v1.SessionConfig */
} attnkit_config_kind;

/** Parses and validates a serialized config of `kind` (`data`, `size` bytes, borrowed). Returns
 * NULL when it is valid; otherwise INVALID_ARGUMENT whose message starts with the field's path. */
ATTNKIT_API attnkit_status* attnkit_config_validate(attnkit_config_kind kind, const void* data,
                                                    size_t size);

/** As attnkit_config_validate() for textproto (`text`, `size` bytes, need not be NUL-terminated).
 */
ATTNKIT_API attnkit_status* attnkit_config_validate_text(attnkit_config_kind kind, const char* text,
                                                         size_t size);

/** Converts textproto to the binary wire format. On success *out is a new buffer the caller frees
 * with attnkit_buffer_free(). The config is parsed, not validated. */
ATTNKIT_API attnkit_status* attnkit_config_text_to_binary(attnkit_config_kind kind,
                                                          const char* text, size_t size,
                                                          attnkit_buffer** out);

/** Converts the binary wire format to textproto (not NUL-terminated; size given). */
ATTNKIT_API attnkit_status* attnkit_config_binary_to_text(attnkit_config_kind kind,
                                                          const void* data, size_t size,
                                                          attnkit_buffer** out);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_ATTNKIT_CONFIG_H_ */
