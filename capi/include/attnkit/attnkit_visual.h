/** @file
 * attnkit C ABI: visual token pruning (CDPruner, DivPrune, random and uniform-grid baselines).
 *
 * A pruner is configured by an attnkit.v1.VisualPruningConfig. It selects which image tokens of a
 * VLM prompt to keep from the image tokens' projector output (image_embeds, the relevance side),
 * their features (image_features, the similarity side) and the text embeddings (text_embeds,
 * shared by all images). A call handles one or several images, with a budget per image or one
 * global budget (config budget_scope). Results are library-owned attnkit_visual_selection objects.
 *
 * Tensors follow attnkit_common.h (DLPack, borrowed, float32/float16/bfloat16, CPU or CUDA where
 * built with it, any strides); computation is in float32. By default (fast_kernel false) on the
 * host with the reference's rounding, so the picks equal the reference's (CUDA inputs are copied
 * over); with fast_kernel on the device of image_features (CUDA: cuBLAS GEMMs and the greedy loop
 * on the GPU, only the picks are copied back), where picks can differ from the reference's on
 * near-tied DPP gains.
 */
#ifndef ATTNKIT_ATTNKIT_VISUAL_H_
#define ATTNKIT_ATTNKIT_VISUAL_H_

#include "attnkit/attnkit_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A visual token pruner: an immutable configuration. Unlike most attnkit objects, a pruner may be
 * used by several threads at once (select keeps no state). Free with attnkit_visual_pruner_free().
 */
typedef struct attnkit_visual_pruner attnkit_visual_pruner;

/** The kept tokens of every image of one select call: per image, the kept token indices, local to
 * that image and ascending. Library-owned; free with attnkit_visual_selection_free(). Read-only,
 * so it may be read by several threads at once. */
typedef struct attnkit_visual_selection attnkit_visual_selection;

/** Creates a pruner from a serialized attnkit.v1.VisualPruningConfig (`data`, `size` bytes,
 * borrowed). On success *out is a new pruner the caller owns; on error *out is NULL and the
 * status is INVALID_ARGUMENT naming the field. */
ATTNKIT_API attnkit_status* attnkit_visual_pruner_create(const void* data, size_t size,
                                                         attnkit_visual_pruner** out);

/** As attnkit_visual_pruner_create() from textproto (`text`, `size` bytes, need not be
 * NUL-terminated). */
ATTNKIT_API attnkit_status* attnkit_visual_pruner_create_from_text(const char* text, size_t size,
                                                                   attnkit_visual_pruner** out);

/** Frees a pruner. NULL is a no-op. Selections it returned stay valid. */
ATTNKIT_API void attnkit_visual_pruner_free(attnkit_visual_pruner* pruner);

/** Selects the image tokens to keep, for images of equal size N:
 *   image_embeds   [N, C] (one image) or [num_images, N, C]: the relevance side;
 *   image_features [N, Dv] or [num_images, N, Dv] (same rank and leading sizes as image_embeds);
 *   text_embeds    [M, C], M >= 1, shared by all images.
 * CDPruner needs all three; DIVPRUNE, RANDOM_SUBSET and UNIFORM_GRID use only image_features and
 * accept NULL image_embeds and text_embeds. A budget (num_keep_tokens) larger than N (or than all
 * tokens for a global budget) is INVALID_ARGUMENT, and so are non-finite inputs (CDPRUNER: NaN or
 * infinity in any of the three, or a kernel that overflows float32). On success *out is a new
 * selection the caller owns; on error *out is NULL. Thread-safe for a given pruner. */
ATTNKIT_API attnkit_status* attnkit_visual_pruner_select(const attnkit_visual_pruner* pruner,
                                                         const DLTensor* image_embeds,
                                                         const DLTensor* image_features,
                                                         const DLTensor* text_embeds,
                                                         attnkit_visual_selection** out);

/** As attnkit_visual_pruner_select() for images of different sizes: the rows of all images are
 * concatenated, image i holding `image_sizes[i]` (>= 1) consecutive rows:
 *   image_embeds [sum N_i, C], image_features [sum N_i, Dv], text_embeds [M, C].
 * `image_sizes` (num_images >= 1 entries) is borrowed. */
ATTNKIT_API attnkit_status* attnkit_visual_pruner_select_ragged(
    const attnkit_visual_pruner* pruner, const DLTensor* image_embeds,
    const DLTensor* image_features, const int64_t* image_sizes, size_t num_images,
    const DLTensor* text_embeds, attnkit_visual_selection** out);

/** The number of images of `selection`; 0 for NULL. */
ATTNKIT_API size_t attnkit_visual_selection_num_images(const attnkit_visual_selection* selection);

/** The number of tokens (N_i) of image `image`; 0 for NULL or an image out of range. */
ATTNKIT_API size_t attnkit_visual_selection_image_size(const attnkit_visual_selection* selection,
                                                       size_t image);

/** The number of kept tokens of image `image`; 0 for NULL or an image out of range. With a global
 * budget an image may keep none; with the gain guard fewer than the budget may be kept. */
ATTNKIT_API size_t attnkit_visual_selection_num_kept(const attnkit_visual_selection* selection,
                                                     size_t image);

/** The kept token indices of image `image` (num_kept entries, ascending, in [0, N_i)), owned by
 * `selection` and valid until it is freed; NULL for NULL, an image out of range, or none kept. */
ATTNKIT_API const int64_t* attnkit_visual_selection_indices(
    const attnkit_visual_selection* selection, size_t image);

/** The kept tokens of all images as indices into the concatenated image tokens (image i's token t
 * is offset_i + t, offset_i = N_0 + ... + N_{i-1}), ascending. On success *out is a new array the
 * caller frees with attnkit_int64_array_free(). */
ATTNKIT_API attnkit_status* attnkit_visual_selection_flat_indices(
    const attnkit_visual_selection* selection, attnkit_int64_array** out);

/** The positions to keep in a full prompt of `prompt_length` tokens, as the reference's
 * get_cdpruner_mask: every position that is not an image token, plus the kept image tokens.
 * `image_token_mask` (prompt_length bytes, borrowed; nonzero = image token) must mark exactly
 * sum N_i positions, taken as the images' tokens in order. On success *out is a new array of
 * ascending positions the caller frees with attnkit_int64_array_free(). */
ATTNKIT_API attnkit_status* attnkit_visual_selection_kept_positions(
    const attnkit_visual_selection* selection, const uint8_t* image_token_mask,
    size_t prompt_length, attnkit_int64_array** out);

/** Frees a selection. NULL is a no-op. */
ATTNKIT_API void attnkit_visual_selection_free(attnkit_visual_selection* selection);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_ATTNKIT_VISUAL_H_ */
