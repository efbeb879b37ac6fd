#include "visual/visual_backend.h"

#include "absl/strings/str_cat.h"
#include "visual/visual_device.h"
#include "visual/visual_host.h"

namespace attnkit::visual {
namespace {

absl::StatusOr<Picks> DivPruneOnDevice(absl::Span<const SelectionProblem> problems,
                                       const at::Tensor& /*text*/,
                                       const VisualOptions& /*options*/) {
  return SelectDivPruneOnDevice(problems);
}

// One row per VisualMethod, in the enum's order.
constexpr VisualSelector kSelectors[] = {
    {VisualMethod::kCDPruner, "CDPRUNER", /*needs_embeds=*/true, SelectCdprunerOnHost,
     SelectCdprunerOnDevice},
    {VisualMethod::kDivPrune, "DIVPRUNE", /*needs_embeds=*/false, SelectDivPruneOnHost,
     DivPruneOnDevice},
    // The baselines read only the token counts: one host function serves both backends.
    {VisualMethod::kRandom, "RANDOM_SUBSET", /*needs_embeds=*/false, SelectRandomSubset,
     SelectRandomSubset},
    {VisualMethod::kUniform, "UNIFORM_GRID", /*needs_embeds=*/false, SelectUniformGrid,
     SelectUniformGrid},
};

}  // namespace

absl::Status NonFiniteError(const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what,
                   " has non-finite values (non-finite inputs, or a kernel that overflows float32: "
                   "theta too close to 1)"));
}

const char* VisualBackendName(VisualBackend backend) {
  return backend == VisualBackend::kCpu ? "cpu" : "tensor_ops";
}

VisualBackend ChooseVisualBackend(at::Device features_device, const VisualOptions& options) {
  return features_device.is_cuda() && options.fast_kernel ? VisualBackend::kTensorOps
                                                          : VisualBackend::kCpu;
}

const VisualSelector& SelectorFor(VisualMethod method) {
  for (const VisualSelector& selector : kSelectors) {
    if (selector.method == method) return selector;
  }
  return kSelectors[0];  // unreachable: every VisualMethod has a row
}

}  // namespace attnkit::visual
