// Conformance kind "sparse_attention": Tri-shape and XAttention block masks and the block-sparse
// attention output through the C ABI (attnkit_sparse_attention). The case config (reference
// parameter names) maps onto a SparseAttentionConfig textproto; any key or value it cannot map is a
// failure. Checks: block_mask equal exactly; output (where present) within max abs error 1e-4.
// Cases without q/k (mask only) are built for q_len = q_blocks * block_size and
// k_len = k_blocks * block_size, the lengths their masks were made for.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>

#include "absl/strings/str_cat.h"
#include "attnkit/attnkit_sparse.h"
#include "conformance.h"
#include "dlpack_util.h"

namespace attnkit::conformance {
namespace {

using attnkit::testing::DLView;

absl::StatusOr<at::Tensor> LoadSparse(const SafetensorsFile& file, const std::string& name,
                                      SafetensorsDType dtype, at::ScalarType scalar) {
  auto entry = file.Get(name);
  if (!entry.ok()) return entry.status();
  if ((*entry)->dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected ", SafetensorsDTypeName(dtype),
                                                   ", got ",
                                                   SafetensorsDTypeName((*entry)->dtype)));
  }
  at::Tensor t = at::empty((*entry)->shape, at::TensorOptions().dtype(scalar));
  if ((*entry)->data.size() != static_cast<size_t>(t.nbytes())) {
    return absl::InvalidArgumentError(name + ": size does not match its shape");
  }
  if (t.nbytes() > 0) std::memcpy(t.data_ptr(), (*entry)->data.data(), t.nbytes());
  return t;
}

struct MappedConfig {
  std::string text;
  int64_t block_size = 128;
};

// The case config as a SparseAttentionConfig textproto.
absl::StatusOr<MappedConfig> ToSparseTextproto(const JsonValue& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("config: not a JSON object");
  MappedConfig out;
  std::string xattn;
  for (const auto& [key, value] : config.object()) {
    if (key == "mode") {
      if (!value.is_string()) return absl::InvalidArgumentError("config.mode: not a string");
      const std::string& m = value.string();
      if (m == "tri-shape") {
        absl::StrAppend(&out.text, "mode: TRI_SHAPE\n");
      } else if (m == "x-attention") {
        absl::StrAppend(&out.text, "mode: XATTENTION\n");
      } else if (m == "dense") {
        absl::StrAppend(&out.text, "mode: DENSE\n");
      } else if (m == "a-shape") {
        absl::StrAppend(&out.text, "mode: A_SHAPE\n");
      } else {
        return absl::InvalidArgumentError("config.mode: unknown value \"" + m + "\"");
      }
    } else if (key == "block_size" || key == "recent_size" || key == "last_query_size") {
      auto n = JsonInt(value, "config." + key);
      if (!n.ok()) return n.status();
      absl::StrAppend(&out.text, key, ": ", *n, "\n");
      if (key == "block_size") out.block_size = *n;
    } else if (key == "stride") {
      auto n = JsonInt(value, "config.stride");
      if (!n.ok()) return n.status();
      absl::StrAppend(&xattn, " stride: ", *n);
    } else if (key == "threshold") {
      if (!value.is_number()) return absl::InvalidArgumentError("config.threshold: not a number");
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.17g", value.number());
      absl::StrAppend(&xattn, " threshold: ", buf);
    } else if (key == "head_aggregation") {
      if (!value.is_string()) {
        return absl::InvalidArgumentError("config.head_aggregation: not a string");
      }
      if (value.string() == "sum") {
        absl::StrAppend(&xattn, " head_aggregation: SUM");
      } else if (value.string() == "per_head") {
        absl::StrAppend(&xattn, " head_aggregation: PER_HEAD");
      } else {
        return absl::InvalidArgumentError("config.head_aggregation: unknown value \"" +
                                          value.string() + "\"");
      }
    } else {
      return absl::InvalidArgumentError("config: unknown key \"" + key + "\"");
    }
  }
  if (!xattn.empty()) absl::StrAppend(&out.text, "xattention {", xattn, " }\n");
  return out;
}

absl::Status RunSparseCase(const SafetensorsFile& file, const JsonValue& config) {
  auto mapped = ToSparseTextproto(config);
  if (!mapped.ok()) return mapped.status();
  attnkit_sparse_attention* raw = nullptr;
  if (absl::Status s = FromC(attnkit_sparse_attention_create_from_text(mapped->text.data(),
                                                                       mapped->text.size(), &raw));
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("create: ", s.message()));
  }
  std::unique_ptr<attnkit_sparse_attention, void (*)(attnkit_sparse_attention*)> sparse(
      raw, attnkit_sparse_attention_free);

  auto expected = LoadSparse(file, "block_mask", SafetensorsDType::kBool, at::kBool);
  if (!expected.ok()) return expected.status();
  if (expected->dim() != 2) return absl::InvalidArgumentError("block_mask: expected rank 2");

  at::Tensor q, k, v;
  const bool has_qkv = file.Has("q") && file.Has("k");
  if (has_qkv) {
    auto qt = LoadSparse(file, "q", SafetensorsDType::kF32, at::kFloat);
    if (!qt.ok()) return qt.status();
    auto kt = LoadSparse(file, "k", SafetensorsDType::kF32, at::kFloat);
    if (!kt.ok()) return kt.status();
    q = *qt;
    k = *kt;
  } else {
    const int64_t b = mapped->block_size;
    q = at::zeros({1, 1, expected->size(0) * b, 1}, at::TensorOptions().dtype(at::kFloat));
    k = at::zeros({1, 1, expected->size(1) * b, 1}, at::TensorOptions().dtype(at::kFloat));
  }
  if (q.dim() != 4 || k.dim() != 4) return absl::InvalidArgumentError("q, k: expected rank 4");
  q = OnCaseDevice(q);
  k = OnCaseDevice(k);

  int64_t mask_heads = 0, q_blocks = 0, k_blocks = 0;
  if (absl::Status s = FromC(attnkit_sparse_attention_mask_shape(
          sparse.get(), q.size(1), q.size(2), k.size(2), &mask_heads, &q_blocks, &k_blocks));
      !s.ok()) {
    return s;
  }
  at::Tensor device_mask = at::zeros({q.size(0), mask_heads, q_blocks, k_blocks},
                                     at::TensorOptions().dtype(at::kBool).device(CaseDevice()));
  {
    DLView qv(q), kv(k), mv(device_mask);
    if (absl::Status s = FromC(attnkit_sparse_attention_build_mask(sparse.get(), qv, kv, mv));
        !s.ok()) {
      return absl::InternalError(absl::StrCat("build_mask: ", s.message()));
    }
  }
  const at::Tensor mask = device_mask.cpu();
  if (mask.size(2) != expected->size(0) || mask.size(3) != expected->size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_mask: shape [", mask.size(2), ", ", mask.size(3),
                     "] differs from expected [", expected->size(0), ", ", expected->size(1), "]"));
  }
  for (int64_t h = 0; h < mask_heads; ++h) {
    at::Tensor got = mask[0][h];
    if (!got.equal(*expected)) {
      at::Tensor diff = got.ne(*expected).nonzero();
      const int64_t r = diff[0][0].item<int64_t>(), c = diff[0][1].item<int64_t>();
      return absl::InvalidArgumentError(
          absl::StrCat("block_mask differs in ", diff.size(0), " blocks (head ", h, "), first at (",
                       r, ", ", c, "): got ", got[r][c].item<bool>(), ", expected ",
                       (*expected)[r][c].item<bool>(), "; got ", got.sum().item<int64_t>(),
                       " blocks, expected ", expected->sum().item<int64_t>()));
    }
  }

  if (!file.Has("output")) return absl::OkStatus();
  if (!has_qkv || !file.Has("v"))
    return absl::InvalidArgumentError("output: present without q/k/v");
  auto vt = LoadSparse(file, "v", SafetensorsDType::kF32, at::kFloat);
  if (!vt.ok()) return vt.status();
  auto want = LoadSparse(file, "output", SafetensorsDType::kF32, at::kFloat);
  if (!want.ok()) return want.status();
  v = OnCaseDevice(*vt);
  at::Tensor device_out =
      at::zeros(want->sizes(), at::TensorOptions().dtype(at::kFloat).device(CaseDevice()));
  {
    DLView qv(q), kv(k), vv(v), mv(device_mask), ov(device_out);
    if (absl::Status s = FromC(attnkit_sparse_attention_attention(sparse.get(), qv, kv, vv, mv,
                                                                  /*scale=*/0.0, ov));
        !s.ok()) {
      return absl::InternalError(absl::StrCat("attention: ", s.message()));
    }
  }
  const double err = (device_out.cpu() - *want).abs().max().item<double>();
  if (!(err <= 1e-4)) {
    return absl::InvalidArgumentError(absl::StrCat("output: max abs error ", err, " > 1e-4"));
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("sparse_attention", RunSparseCase);

}  // namespace attnkit::conformance
