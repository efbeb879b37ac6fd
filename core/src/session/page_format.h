// The element formats of a page's key or value rows and the bytes a page takes in each: Torch-free,
// so the host store and its kernels (cpu/paged_attention.h) and the planner (config/kv_plan.h,
// built into attnkit_config without Torch) share one formula.
#ifndef ATTNKIT_CORE_SESSION_PAGE_FORMAT_H_
#define ATTNKIT_CORE_SESSION_PAGE_FORMAT_H_

#include <cstdint>

#include "attnkit/config.h"

namespace attnkit::kernels {

// The element format of a page's key or value rows.
// kInt8: a page of page_size rows holds page_size * head_dim int8 values (row-major), then
// page_size * (head_dim / group_size) float16 scales (row-major): x = scale[row][c / group] * q.
// kInt4 / kInt2 (KIVI's value cache): per token, asymmetric over groups of group_size channels.
//   A page holds page_size rows of head_dim codes packed along the channels (code j of a row at
//   bit (j * bits) % 8 of byte j * bits / 8), then float16 scales [page_size][head_dim / group],
//   then float16 minimums of the same shape.
// kInt4Channel / kInt2Channel (KIVI's key cache): per channel, asymmetric over the page's tokens
//   (the page is the quantization group). A page holds head_dim rows of page_size codes packed
//   along the tokens, then float16 scales [head_dim], then float16 minimums [head_dim]. Pages are
//   written a whole page at a time (QuantizeKivi over its tokens).
// Both KIVI layouts dequantize as KIVI does in float16: x = half(half(code * scale) + min).
enum class RowFormat {
  kFloat32,
  kFloat16,
  kBFloat16,
  kInt8,
  kInt4,
  kInt2,
  kInt4Channel,
  kInt2Channel
};

// Bits per code of a KIVI format (0 for the others), and whether it is the per-channel layout.
inline int KiviBits(RowFormat format) {
  switch (format) {
    case RowFormat::kInt4:
    case RowFormat::kInt4Channel:
      return 4;
    case RowFormat::kInt2:
    case RowFormat::kInt2Channel:
      return 2;
    default:
      return 0;
  }
}
inline bool IsPerChannel(RowFormat f) {
  return f == RowFormat::kInt4Channel || f == RowFormat::kInt2Channel;
}

// Bytes of one page's keys or values in `format`.
inline int64_t PageBytes(RowFormat format, int page_size, int head_dim, int group_size) {
  const int64_t rows = page_size;
  switch (format) {
    case RowFormat::kFloat32:
      return rows * head_dim * 4;
    case RowFormat::kInt8:
      return rows * (head_dim + 2 * (head_dim / group_size));
    case RowFormat::kInt4:
    case RowFormat::kInt2:
      return rows * (head_dim * KiviBits(format) / 8 + 4 * (head_dim / group_size));
    case RowFormat::kInt4Channel:
    case RowFormat::kInt2Channel:
      return head_dim * (rows * KiviBits(format) / 8 + 4);
    default:
      return rows * head_dim * 2;
  }
}

// The format a host store keeps keys (keys = true) or values of `type` in (type resolved:
// SessionOptions::key_type()/value_type()): KIVI keys are quantized per channel over a page of
// tokens, KIVI values per token.
inline RowFormat FormatOf(KvDataType type, bool keys) {
  switch (type) {
    case KvDataType::kInt4:
      return keys ? RowFormat::kInt4Channel : RowFormat::kInt4;
    case KvDataType::kInt2:
      return keys ? RowFormat::kInt2Channel : RowFormat::kInt2;
    case KvDataType::kFloat16:
      return RowFormat::kFloat16;
    case KvDataType::kBFloat16:
      return RowFormat::kBFloat16;
    case KvDataType::kInt8:
      return RowFormat::kInt8;
    default:
      return RowFormat::kFloat32;
  }
}

// How the host store lays out a session's pages, decided from its options alone (the store
// builds its pools from it; the planner counts bytes with it).
struct HostPageLayout {
  RowFormat session = RowFormat::kFloat32;  // the session dtype's format
  RowFormat keys = RowFormat::kFloat32, values = RowFormat::kFloat32;
  int group = 0;            // quantization group (head_dim when nothing is quantized)
  int page_size = 16;       // tokens of a plain or residual page
  int main_page = 16;       // tokens of a main page: a key group for KIVI keys, else page_size
  int residual_tokens = 0;  // the full-precision window
  // Channels of a main page's key rows: head_dim, or with ThinK the kept channels, padded with
  // zeros to a multiple of 8 when head_dim is a multiple of 8 and at least 64, so that the decode
  // kernel's vectors fit them (at most 7 channels, under 11 % of head_dim; smaller heads keep the
  // exact count and take the plain key loop).
  int key_dim = 0;
  int kept_channels = 0;      // ThinK's kept channels (head_dim without ThinK)
  bool think = false;         // ThinK: key rows of the main pages hold the kept channels only
  bool channel_keys = false;  // KIVI keys: quantized per channel over a main page of tokens
  bool plain = true;          // session-format pages and no residual window
  // KIVI keys collect a group's tokens in the window before quantizing them; ThinK keeps a
  // head's tokens there until it has chosen its channels.
  bool residual_pool() const { return residual_tokens > 0 || channel_keys || think; }
};

inline HostPageLayout HostLayoutOf(const SessionOptions& o) {
  HostPageLayout l;
  l.session = o.dtype == DType::kFloat16    ? RowFormat::kFloat16
              : o.dtype == DType::kBFloat16 ? RowFormat::kBFloat16
                                            : RowFormat::kFloat32;
  l.keys = FormatOf(o.key_type(), /*keys=*/true);
  l.values = FormatOf(o.value_type(), /*keys=*/false);
  l.group = o.kv_format.quantized() ? o.kv_group_size() : o.head_dim;
  l.page_size = o.page_size;
  l.residual_tokens = o.kv_format.residual_tokens;
  l.channel_keys = IsPerChannel(l.keys);
  l.main_page = l.channel_keys ? l.group : o.page_size;
  l.think = o.kv_format.think();
  l.kept_channels = o.kv_format.KeptKeyChannels(o.head_dim);
  const bool pad = l.think && o.head_dim % 8 == 0 && o.head_dim >= 64;
  l.key_dim = pad ? (l.kept_channels + 7) / 8 * 8 : l.kept_channels;
  l.plain = l.keys == l.session && l.values == l.session && l.residual_tokens == 0 && !l.think;
  return l;
}

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_SESSION_PAGE_FORMAT_H_
