// KvStore::SaveState / LoadState: a store's contents as bytes, whatever its page format (the
// pools copy whole pages: keys then values, scales and zero points included).
#include <string>

#include "absl/strings/str_cat.h"
#include "session/kv_store.h"
#include "util/archive.h"

namespace attnkit::session {
namespace {

int64_t PagesFor(int64_t tokens, int64_t page_size) { return (tokens + page_size - 1) / page_size; }

void SavePages(util::ArchiveWriter& w, const PagePool& pool, const std::vector<int32_t>& pages) {
  w.I64(static_cast<int64_t>(pages.size()));
  pool.ReadPages(pages, w.Extend(pages.size() * static_cast<size_t>(pool.page_bytes())));
}

// `count` pages from the pool, filled from the archive.
std::vector<int32_t> LoadPages(util::ArchiveReader& r, PagePool& pool, int64_t count) {
  const char* bytes = r.Raw("page bytes", count * pool.page_bytes());
  std::vector<int32_t> pages;
  if (bytes == nullptr) return pages;
  for (int64_t i = 0; i < count; ++i) pages.push_back(pool.Allocate());
  pool.WritePages(pages, bytes);
  return pages;
}

}  // namespace

int64_t KvStore::SavedBytesHint() const {
  int64_t bytes = 0;
  for (const Layer& layer : layers_) {
    for (const HeadCache& cache : layer.heads) {
      bytes += static_cast<int64_t>(cache.pages.size()) * layer.pool->page_bytes() +
               16 * cache.length + 64;
      if (layer.residual_pool != nullptr) {
        bytes +=
            static_cast<int64_t>(cache.residual_pages.size()) * layer.residual_pool->page_bytes();
      }
    }
  }
  return bytes;
}

void KvStore::SaveState(util::ArchiveWriter& w) const {
  w.F64(sparse_density_);
  w.I64(static_cast<int64_t>(layers_.size()));
  for (const Layer& layer : layers_) {
    w.Bool(!layer.heads.empty());
    if (layer.heads.empty()) continue;
    w.Int64s(layer.seen);
    for (const HeadCache& cache : layer.heads) {
      w.I64(cache.length);
      w.I64(cache.residual);
      w.I64(cache.residual_first);
      w.Int64s(cache.origin);
      w.Int64s(cache.rotated);
      // ThinK's kept key channels (only in a ThinK session's blob: its config says so).
      if (context_.options->kv_format.think()) {
        w.Int64s(std::vector<int64_t>(cache.channels.begin(), cache.channels.end()));
      }
      SavePages(w, *layer.pool, cache.pages);
      if (layer.residual_pool != nullptr) SavePages(w, *layer.residual_pool, cache.residual_pages);
    }
  }
}

absl::Status KvStore::LoadState(util::ArchiveReader& r) {
  const SessionOptions& o = *context_.options;
  sparse_density_ = r.F64("sparse density");
  const int64_t num_layers = r.I64("store layers");
  if (r.ok() && num_layers != static_cast<int64_t>(layers_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("blob: the saved cache has ", num_layers,
                                                   " layers; this session has ", layers_.size()));
  }
  for (size_t l = 0; l < layers_.size() && r.ok(); ++l) {
    if (!r.Bool("layer materialized")) continue;
    Layer& layer = Materialize(static_cast<int>(l));
    std::vector<int64_t> seen = r.Int64s("tokens appended");
    if (r.ok() && seen.size() != static_cast<size_t>(o.batch_size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob: layer ", l, " has ", seen.size(), " sequences; this session has ", o.batch_size));
    }
    layer.seen = std::move(seen);
    for (size_t index = 0; index < layer.heads.size() && r.ok(); ++index) {
      HeadCache& cache = layer.heads[index];
      auto bad = [&](const std::string& what) {
        return absl::InvalidArgumentError(absl::StrCat("blob: layer ", l, ", sequence ",
                                                       index / o.num_kv_heads, ", kv head ",
                                                       index % o.num_kv_heads, ": ", what));
      };
      const int64_t length = r.I64("cache length"), residual = r.I64("residual tokens"),
                    residual_first = r.I64("residual start");
      cache.origin = r.Int64s("original positions");
      cache.rotated = r.Int64s("rotated positions");
      std::vector<int64_t> channels;
      if (o.kv_format.think()) channels = r.Int64s("kept key channels");
      const int64_t pages = r.Count("pages", layer.pool->page_bytes());
      if (!r.ok()) break;
      if (length < 0 || residual < 0 || residual > length || residual_first < 0 ||
          (layer.residual_pool == nullptr && residual > 0)) {
        return bad(absl::StrCat("inconsistent length ", length, ", residual ", residual, " from ",
                                residual_first));
      }
      if (static_cast<int64_t>(cache.origin.size()) != length ||
          static_cast<int64_t>(cache.rotated.size()) != length) {
        return bad(absl::StrCat(cache.origin.size(), " and ", cache.rotated.size(),
                                " positions for ", length, " tokens"));
      }
      for (size_t i = 0; i < cache.origin.size(); ++i) {
        if (cache.origin[i] < 0 || cache.origin[i] >= layer.seen[index / o.num_kv_heads]) {
          return bad(absl::StrCat("token ", i, " has original position ", cache.origin[i],
                                  ", outside the ", layer.seen[index / o.num_kv_heads],
                                  " tokens appended"));
        }
      }
      if (pages != PagesFor(length - residual, layer.pool->page_size())) {
        return bad(absl::StrCat(pages, " pages for ", length - residual, " tokens of ",
                                layer.pool->page_size(), " per page"));
      }
      if (o.kv_format.think()) {
        // None (the head has not chosen: every token in the window) or the kept count, ascending.
        const int kept = o.kv_format.KeptKeyChannels(o.head_dim);
        bool valid =
            channels.empty() ? length == residual : static_cast<int64_t>(channels.size()) == kept;
        for (size_t c = 0; valid && c < channels.size(); ++c) {
          valid = channels[c] >= 0 && channels[c] < o.head_dim &&
                  (c == 0 || channels[c] > channels[c - 1]);
        }
        if (!valid) {
          return bad(absl::StrCat(channels.size(), " kept key channels (ThinK keeps ", kept, " of ",
                                  o.head_dim, ", ascending) for ", length - residual,
                                  " tokens outside the window"));
        }
        cache.channels.assign(channels.begin(), channels.end());
      }
      cache.length = length;
      cache.residual = residual;
      cache.residual_first = residual_first;
      cache.pages = LoadPages(r, *layer.pool, pages);
      if (layer.residual_pool != nullptr) {
        const int64_t count = r.Count("residual pages", layer.residual_pool->page_bytes());
        if (r.ok() &&
            count < PagesFor(residual_first + residual, layer.residual_pool->page_size())) {
          return bad(absl::StrCat(count, " residual pages for ", residual, " tokens from row ",
                                  residual_first));
        }
        cache.residual_pages = LoadPages(r, *layer.residual_pool, count);
      }
    }
  }
  return r.status();
}

}  // namespace attnkit::session
