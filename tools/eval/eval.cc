// attnkit-eval: what each KV-cache policy costs in model quality, measured on the two real models
// of ../shared/models through attnkit::Session (docs/quality/README.md describes the method, the
// configuration files and the output).
//
// For each model: a fixed set of texts sampled from the model with the full cache (temperature 1,
// seeded; tools/eval/texts/<model>.txt, rewritten by --regenerate-texts) is teacher-forced through
// the full cache and through every configuration at every budget. A run prefills the first
// --prefill tokens of a text and then feeds the rest one token per call, as a generation would.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "attnkit/config_parser.h"
#include "eval_models.h"
#include "support/json.h"
#include "progress.h"

namespace attnkit::tools {
namespace {

namespace fs = std::filesystem;

#ifndef ATTNKIT_SOURCE_DIR
#define ATTNKIT_SOURCE_DIR "."
#endif

void Log(const std::string& line) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

struct Flags {
  std::string models_dir;
  std::vector<std::string> models = KnownModels();
  std::vector<std::string> configs;  // files or folders
  std::string texts_dir = std::string(ATTNKIT_SOURCE_DIR) + "/tools/eval/texts";
  std::string out_dir = std::string(ATTNKIT_SOURCE_DIR) + "/docs/quality";
  std::vector<double> budgets = {0.25, 0.5, 0.75};
  int num_texts = 32, text_tokens = 480, prefill = 32, jobs = 0;
  // > 0: one text per model instead, the reference prompt and the first N ids the full-cache
  // run generated after it (the model folder's reference.json), prefilled up to the prompt.
  int reference_text = 0;
  bool regenerate_texts = false, resume = false, quick = false, check = false;
  std::string bars = "all";       // --bars core|random|all
  std::string substitute_random;  // config name run with RandomKeepSession instead
};

// ---------------------------------------------------------------------------------------------
// Texts.

// "1 text", "32 texts".
std::string TextCount(int64_t n) { return absl::StrCat(n, n == 1 ? " text" : " texts"); }

struct Text {
  uint64_t seed = 0;
  std::vector<int64_t> ids;
};

// Samples from `probabilities` (double, sums to 1) with a uniform draw of 53 bits.
int64_t Sample(const at::Tensor& probabilities, std::mt19937_64& rng) {
  const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
  const double* p = probabilities.data_ptr<double>();
  double cumulative = 0;
  const int64_t n = probabilities.numel();
  for (int64_t i = 0; i < n; ++i) {
    cumulative += p[i];
    if (u < cumulative) return i;
  }
  return n - 1;
}

absl::StatusOr<std::vector<Text>> SampleTexts(const EvalModel& m, int count, int tokens) {
  auto options = ParseSessionConfig(m.shape_text, true);
  if (!options.ok()) return options.status();
  std::vector<Text> texts;
  for (int i = 0; i < count; ++i) {
    Text text{static_cast<uint64_t>(1000 + i), {m.bos}};
    std::mt19937_64 rng(text.seed);
    auto session = Session::Create(*options);
    if (!session.ok()) return session.status();
    auto logits = m.forward(**session, text.ids);
    while (true) {
      if (!logits.ok()) return logits.status();
      // Temperature 1: the model's own distribution.
      at::Tensor p = at::softmax(logits->select(0, logits->size(0) - 1).to(at::kDouble), -1);
      text.ids.push_back(Sample(p.contiguous(), rng));
      if (static_cast<int>(text.ids.size()) >= tokens) break;
      logits = m.forward(**session, {text.ids.back()});
    }
    texts.push_back(std::move(text));
  }
  return texts;
}

std::string TextsPath(const Flags& f, const std::string& model) {
  return f.texts_dir + "/" + model + ".txt";
}

absl::Status WriteTexts(const std::string& path, const std::string& model,
                        const std::vector<Text>& texts) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  std::ofstream out(path);
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  out << "# attnkit-eval texts of " << model << ": sampled from the model with the full KV cache,\n"
      << "# temperature 1, starting from BOS. One text per line: the sampling seed "
         "(std::mt19937_64)"
      << "\n# then the token ids. Regenerate with: attnkit-eval --regenerate-texts\n";
  for (const Text& t : texts) out << t.seed << ": " << absl::StrJoin(t.ids, " ") << "\n";
  return out ? absl::OkStatus() : absl::DataLossError(absl::StrCat("writing ", path));
}

// The integer array `key` of a parsed JSON object such as reference.json.
absl::StatusOr<std::vector<int64_t>> JsonIntArray(const JsonValue& root, const std::string& key,
                                                  const std::string& path) {
  const JsonValue* array = root.Find(key);
  if (array == nullptr || !array->is_array()) {
    return absl::DataLossError(absl::StrCat(path, ": no integer array \"", key, "\""));
  }
  std::vector<int64_t> out;
  for (const JsonValue& item : array->array()) {
    auto v = JsonInt(item, absl::StrCat(path, ": ", key));
    if (!v.ok()) return v.status();
    out.push_back(*v);
  }
  return out;
}

// The reference prompt and the first `generated` ids after it of the full-cache greedy run
// (reference.json's prompt_ids and greedy_ids_full_cache); *prompt_tokens gets the prompt's length.
absl::StatusOr<Text> ReferenceText(const std::string& model_dir, int generated,
                                   int* prompt_tokens) {
  const std::string path = model_dir + "/reference.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto root = JsonValue::Parse(buffer.str());
  if (!root.ok()) return absl::DataLossError(absl::StrCat(path, ": ", root.status().message()));
  auto prompt = JsonIntArray(*root, "prompt_ids", path);
  if (!prompt.ok()) return prompt.status();
  auto ids = JsonIntArray(*root, "greedy_ids_full_cache", path);
  if (!ids.ok()) return ids.status();
  const size_t want = prompt->size() + static_cast<size_t>(generated);
  if (prompt->empty() || ids->size() < want ||
      !std::equal(prompt->begin(), prompt->end(), ids->begin())) {
    return absl::InvalidArgumentError(
        absl::StrCat("--reference-text ", generated, ": ", path, " has ",
                     static_cast<int64_t>(ids->size()) - static_cast<int64_t>(prompt->size()),
                     " generated ids after its ", prompt->size(), "-token prompt"));
  }
  ids->resize(want);
  *prompt_tokens = static_cast<int>(prompt->size());
  return Text{0, std::move(*ids)};
}

absl::StatusOr<std::vector<Text>> ReadTexts(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<Text> texts;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t colon = line.find(':');
    Text t;
    if (colon == std::string::npos || !absl::SimpleAtoi(line.substr(0, colon), &t.seed)) {
      return absl::DataLossError(absl::StrCat(path, ": expected a line \"SEED: ID ID ...\", got \"",
                                              line.substr(0, 40), "\""));
    }
    for (absl::string_view item :
         absl::StrSplit(absl::string_view(line).substr(colon + 1), ' ', absl::SkipEmpty())) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(item, &id) || id < 0) {
        return absl::DataLossError(
            absl::StrCat(path, ": text ", t.seed, ": \"", item, "\" is not a token id"));
      }
      t.ids.push_back(id);
    }
    texts.push_back(std::move(t));
  }
  return texts;
}

// ---------------------------------------------------------------------------------------------
// Configurations.

struct Config {
  std::string name;  // file stem
  std::string path;
  std::string text;  // file contents
};

absl::StatusOr<std::vector<Config>> ListConfigs(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(p)) {
        if (entry.path().extension() == ".textproto") found.push_back(entry.path().string());
      }
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(p);
    }
  }
  std::vector<Config> configs;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", file));
    std::stringstream ss;
    ss << in.rdbuf();
    configs.push_back({fs::path(file).stem().string(), file, ss.str()});
  }
  return configs;
}

// The configuration's eviction areas scaled to `budget` tokens per kv head: start_tokens stays as
// written (attention sinks are a fixed count); recent_tokens keeps its share of the written total;
// intermediate_tokens takes the rest (0 stays 0: StreamingLLM gives the rest to recent_tokens).
// Sizes stay multiples of group_size; an adaptive refined size (0) stays adaptive, a fixed one
// keeps its share of the intermediate area.
EvictionOptions ScaleToBudget(EvictionOptions e, int budget) {
  const int g = std::max(1, e.group_size);
  auto down = [g](int v) { return std::max(0, v / g * g); };
  const int written = e.max_cache_tokens();
  const int start = down(std::min(e.start_tokens, budget));
  int recent, intermediate;
  if (e.intermediate_tokens == 0) {
    recent = down(budget - start);
    intermediate = 0;
  } else {
    recent = down(static_cast<int>(std::lround(double(e.recent_tokens) * budget / written)));
    intermediate = down(budget - start - recent);
  }
  if (e.refined_tokens > 0) {
    e.refined_tokens =
        down(static_cast<int>(double(e.refined_tokens) * intermediate / e.intermediate_tokens));
  }
  e.start_tokens = start;
  e.recent_tokens = recent;
  e.intermediate_tokens = intermediate;
  if (e.algorithm == EvictionAlgorithm::kCake) e.window_size = recent;  // CAKE keeps its window
  return e;
}

// ---------------------------------------------------------------------------------------------
// Runs.

// The full-cache run of one text: what every policy run is compared with.
struct Reference {
  at::Tensor logp;               // [P, V] float64 log-probabilities of the predictions
  std::vector<at::Tensor> q, k;  // per layer [N, H, d], [N, Hkv, d]
  int64_t peak_bytes = 0;
  double avg_bytes = 0;
};

struct Trace {
  at::Tensor logits;          // [P, V]: predictions of ids[prefill..N-1]
  std::vector<double> bytes;  // BytesHeld after each call
  int64_t peak_bytes = 0;
  double seconds = 0;
  // Per decode query t (t = prefill..N-2), per layer and kv head: the positions held when the
  // query attended (the cache before the call, plus t itself).
  std::vector<std::vector<std::vector<int64_t>>> held;
};

absl::StatusOr<Trace> TeacherForce(const EvalModel& m, Session& s, const std::vector<int64_t>& ids,
                                   int prefill, bool record_held) {
  Trace tr;
  const int n = ids.size();
  std::vector<at::Tensor> rows;
  const auto t0 = std::chrono::steady_clock::now();
  auto logits = m.forward(s, std::vector<int64_t>(ids.begin(), ids.begin() + prefill));
  if (!logits.ok()) return logits.status();
  rows.push_back(logits->narrow(0, prefill - 1, 1));
  tr.bytes.push_back(static_cast<double>(s.BytesHeld()));
  for (int t = prefill; t < n - 1; ++t) {
    if (record_held) {
      std::vector<std::vector<int64_t>> step;
      for (int l = 0; l < m.n_layers; ++l) {
        for (int g = 0; g < m.n_kv_heads; ++g) {
          auto pos = s.Positions(l, 0, g);
          if (!pos.ok()) return pos.status();
          pos->push_back(t);
          step.push_back(std::move(*pos));
        }
      }
      tr.held.push_back(std::move(step));
    }
    logits = m.forward(s, {ids[t]});
    if (!logits.ok()) return logits.status();
    rows.push_back(*logits);
    tr.bytes.push_back(static_cast<double>(s.BytesHeld()));
  }
  tr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tr.logits = at::cat(rows, 0);
  tr.peak_bytes = s.Stats().peak_bytes_held;
  return tr;
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / v.size();
}

absl::StatusOr<std::unique_ptr<Session>> NewSession(const SessionOptions& o) {
  auto s = Session::Create(o);
  if (!s.ok()) return s.status();
  return std::move(*s);
}

absl::StatusOr<Reference> RunReference(const EvalModel& m, const SessionOptions& full,
                                       const std::vector<int64_t>& ids, int prefill) {
  auto inner = NewSession(full);
  if (!inner.ok()) return inner.status();
  RecordingSession s(std::move(*inner));
  auto tr = TeacherForce(m, s, ids, prefill, false);
  if (!tr.ok()) return tr.status();
  Reference r;
  r.logp = at::log_softmax(tr->logits.to(at::kDouble), -1);
  for (int l = 0; l < m.n_layers; ++l) {
    r.q.push_back(s.Queries(l));
    r.k.push_back(s.Keys(l));
  }
  r.peak_bytes = tr->peak_bytes;
  r.avg_bytes = Mean(tr->bytes);
  return r;
}

// The full-cache run's attention probabilities of layer `l` of a text: float64 [H, N, N], causal,
// each query head against its kv head's keys (what recall and the head-split scores read).
at::Tensor FullAttention(const EvalModel& m, const Reference& ref, int l) {
  const int64_t n = ref.q[0].size(0);
  const at::Tensor group = at::arange(m.n_heads, at::kLong).div(m.n_heads / m.n_kv_heads, "floor");
  const double scale = 1.0 / std::sqrt(static_cast<double>(m.head_dim));
  at::Tensor q = ref.q[l].permute({1, 0, 2});                         // [H, N, d]
  at::Tensor k = ref.k[l].index_select(1, group).permute({1, 0, 2});  // [H, N, d]
  at::Tensor scores = at::matmul(q.to(at::kDouble), k.to(at::kDouble).transpose(1, 2));
  at::Tensor causal = at::ones({n, n}, at::kBool).triu(1);
  return at::softmax(scores.mul(scale).masked_fill(causal, -INFINITY), -1).contiguous();
}

// A head-split file whose labels the tool derives (`head_split { sink_tokens recent_tokens }`
// without `streaming`, `head_scores` or a ratio): DuoAttention learns which heads stream; these
// models come with no such scores, so the tool gives each (layer, kv head) the share of the full
// cache's attention that its decode queries put on the middle of the text (not the first
// sink_tokens, not the last recent_tokens), averaged over the kv head's query heads, the first
// texts and their decode queries. The heads that need the middle least stream.
// A textproto without its comments (which may name any field).
std::string WithoutComments(const std::string& text) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::StrAppend(&out, line.substr(0, line.find('#')), "\n");
  }
  return out;
}

bool ToolHeadSplit(const std::string& with_comments) {
  const std::string text = WithoutComments(with_comments);
  return text.find("head_split") != std::string::npos &&
         text.find("head_scores") == std::string::npos &&
         text.find("streaming:") == std::string::npos &&
         text.find("streaming_ratio") == std::string::npos;
}

std::vector<double> MiddleAttention(const EvalModel& m, const std::vector<Reference>& refs,
                                    int prefill, int sink, int recent, size_t max_texts) {
  std::vector<double> score(static_cast<size_t>(m.n_layers) * m.n_kv_heads, 0.0);
  int64_t count = 0;
  for (size_t i = 0; i < refs.size() && i < max_texts; ++i) {
    const int64_t n = refs[i].q[0].size(0);
    for (int l = 0; l < m.n_layers; ++l) {
      const at::Tensor p = FullAttention(m, refs[i], l);
      const double* pp = p.data_ptr<double>();
      for (int64_t t = prefill; t < n; ++t) {
        for (int h = 0; h < m.n_heads; ++h) {
          const double* row = pp + (h * n + t) * n;
          double mass = 0;
          for (int64_t j = sink; j <= t - recent; ++j) mass += row[j];
          score[static_cast<size_t>(l) * m.n_kv_heads + h / (m.n_heads / m.n_kv_heads)] += mass;
        }
      }
    }
    count += (n - prefill) * (m.n_heads / m.n_kv_heads);
  }
  for (double& x : score) x /= std::max<int64_t>(count, 1);
  return score;
}

// The file's text (comments dropped) with the derived scores and `ratio` inserted into its
// head_split block.
std::string WithHeadScores(const std::string& with_comments, const std::vector<double>& scores,
                           double ratio) {
  std::string text = WithoutComments(with_comments);
  std::string fields = absl::StrCat("streaming_ratio: ", ratio, " head_scores: [");
  for (size_t i = 0; i < scores.size(); ++i) {
    absl::StrAppend(&fields, i ? ", " : "", absl::StrFormat("%.17g", scores[i]));
  }
  fields += "] ";
  const size_t at = text.find('{', text.find("head_split"));
  text.insert(at + 1, " " + fields);
  return text;
}

struct Result {
  std::string model, config;
  double budget_fraction = 1;
  int budget_tokens = 0, texts = 0, tokens_per_text = 0;
  int64_t predictions = 0;
  double kl = 0, top1 = 0, perplexity = 0, ms_per_token = 0, mean_recall = 1;
  double peak_bytes = 0, avg_bytes = 0, full_peak_bytes = 0, full_avg_bytes = 0;
  std::vector<double> recall;  // per layer
  double peak_ratio() const { return peak_bytes / full_peak_bytes; }
  double avg_ratio() const { return avg_bytes / full_avg_bytes; }
};

const char* kCsvHeader =
    "model,config,budget_fraction,budget_tokens,texts,tokens_per_text,predictions,mean_kl,top1,"
    "perplexity,peak_bytes,avg_bytes,full_peak_bytes,full_avg_bytes,peak_ratio,avg_ratio,"
    "ms_per_token,mean_recall,recall_per_layer";

std::string CsvRow(const Result& r) {
  std::vector<std::string> recall;
  for (double x : r.recall) recall.push_back(absl::StrFormat("%.6f", x));
  return absl::StrFormat(
      "%s,%s,%.2f,%d,%d,%d,%d,%.9g,%.6f,%.6f,%.0f,%.1f,%.0f,%.1f,%.6f,%.6f,%.4f,%.6f,%s", r.model,
      r.config, r.budget_fraction, r.budget_tokens, r.texts, r.tokens_per_text, r.predictions, r.kl,
      r.top1, r.perplexity, r.peak_bytes, r.avg_bytes, r.full_peak_bytes, r.full_avg_bytes,
      r.peak_ratio(), r.avg_ratio(), r.ms_per_token, r.mean_recall, absl::StrJoin(recall, ";"));
}

absl::StatusOr<Result> ParseCsvRow(const std::string& line) {
  std::vector<std::string> f = absl::StrSplit(line, ',');
  if (f.size() != 19) {
    return absl::DataLossError(absl::StrCat("expected 19 fields, got ", f.size()));
  }
  Result r;
  r.model = f[0], r.config = f[1];
  // Every number must parse whole (a row cut short by an interrupted write does not).
  std::string bad;
  auto number = [&](int i, auto* out) {
    bool ok = false;
    if constexpr (std::is_same_v<std::remove_pointer_t<decltype(out)>, double>) {
      ok = absl::SimpleAtod(f[i], out);
    } else {
      ok = absl::SimpleAtoi(f[i], out);
    }
    if (!ok && bad.empty())
      bad = absl::StrCat("field ", i + 1, " (\"", f[i], "\") is not a number");
  };
  number(2, &r.budget_fraction);
  number(3, &r.budget_tokens);
  number(4, &r.texts);
  number(5, &r.tokens_per_text);
  number(6, &r.predictions);
  number(7, &r.kl);
  number(8, &r.top1);
  number(9, &r.perplexity);
  number(10, &r.peak_bytes);
  number(11, &r.avg_bytes);
  number(12, &r.full_peak_bytes);
  number(13, &r.full_avg_bytes);
  number(16, &r.ms_per_token);
  number(17, &r.mean_recall);
  for (absl::string_view x : absl::StrSplit(f[18], ';', absl::SkipEmpty())) {
    double v = 0;
    if (!absl::SimpleAtod(x, &v) && bad.empty()) {
      bad = absl::StrCat("field 19 (\"", f[18], "\") is not a list of numbers");
    }
    r.recall.push_back(v);
  }
  if (!bad.empty()) return absl::DataLossError(bad);
  return r;
}

struct ModelData {
  EvalModel model;
  std::vector<Text> texts;
  std::vector<Reference> refs;
  SessionOptions full;
};

// One (configuration, budget) over every text of a model.
absl::StatusOr<Result> RunConfig(const ModelData& d, const std::string& config,
                                 const SessionOptions& options, double fraction, int prefill,
                                 bool random_keep) {
  const EvalModel& m = d.model;
  Result r;
  r.model = m.name, r.config = config, r.budget_fraction = fraction;
  r.texts = d.texts.size();
  r.tokens_per_text = d.texts[0].ids.size();
  // Ratio mode: what a layer keeps once it has seen a whole text.
  // Quest (sparse_decode, no eviction): the tokens a decode step reads per kv head.
  r.budget_tokens =
      options.sparse_decode.enabled() ? static_cast<int>(options.sparse_decode.token_budget)
      : !options.eviction.enabled     ? r.tokens_per_text
      : options.eviction.ratio_mode()
          ? std::max(1,
                     static_cast<int>(r.tokens_per_text * (1 - options.eviction.compression_ratio)))
          : options.eviction.max_cache_tokens();
  // A head split (no eviction): the held positions differ per head, so recall is measured.
  const bool evicts = options.eviction.enabled || options.head_split.enabled();
  double kl = 0, nll = 0, seconds = 0;
  int64_t agree = 0, tokens = 0;
  std::vector<double> recall_sum(m.n_layers, 0.0);
  int64_t recall_count = 0;
  std::vector<double> peaks, avgs, full_peaks, full_avgs;
  for (size_t i = 0; i < d.texts.size(); ++i) {
    const std::vector<int64_t>& ids = d.texts[i].ids;
    const Reference& ref = d.refs[i];
    std::unique_ptr<Session> s;
    if (random_keep) {
      s = std::make_unique<RandomKeepSession>(options, d.texts[i].seed);
    } else {
      auto created = NewSession(options);
      if (!created.ok()) return created.status();
      s = std::move(*created);
    }
    auto tr = TeacherForce(m, *s, ids, prefill, evicts);
    if (!tr.ok()) return tr.status();
    at::Tensor logq = at::log_softmax(tr->logits.to(at::kDouble), -1);
    kl += ref.logp.exp().mul(ref.logp.sub(logq)).sum().item<double>();
    agree += ref.logp.argmax(-1).eq(logq.argmax(-1)).sum().item<int64_t>();
    at::Tensor targets =
        at::tensor(std::vector<int64_t>(ids.begin() + prefill, ids.end()), at::kLong);
    nll -= logq.gather(1, targets.unsqueeze(1)).sum().item<double>();
    seconds += tr->seconds;
    tokens += ids.size();
    peaks.push_back(tr->peak_bytes);
    avgs.push_back(Mean(tr->bytes));
    full_peaks.push_back(ref.peak_bytes);
    full_avgs.push_back(ref.avg_bytes);
    if (evicts) {
      // The full run's attention probabilities of each decode query, summed over what the policy
      // held when that query attended.
      const int64_t n = ref.q[0].size(0);  // the tokens fed: every one but the last
      for (int l = 0; l < m.n_layers; ++l) {
        const at::Tensor p = FullAttention(m, ref, l);
        const double* pp = p.data_ptr<double>();
        for (size_t step = 0; step < tr->held.size(); ++step) {
          const int64_t t = prefill + step;
          double mass = 0;
          for (int h = 0; h < m.n_heads; ++h) {
            const int g = h / (m.n_heads / m.n_kv_heads);
            const double* row = pp + (h * n + t) * n;
            for (int64_t j : tr->held[step][l * m.n_kv_heads + g]) mass += row[j];
          }
          recall_sum[l] += mass / m.n_heads;
        }
      }
      recall_count += tr->held.size();
    }
  }
  const int64_t predictions = static_cast<int64_t>(d.texts.size()) * d.refs[0].logp.size(0);
  r.predictions = predictions;
  r.kl = kl / predictions;
  r.top1 = static_cast<double>(agree) / predictions;
  r.perplexity = std::exp(nll / predictions);
  r.ms_per_token = 1000.0 * seconds / tokens;
  r.peak_bytes = *std::max_element(peaks.begin(), peaks.end());
  r.avg_bytes = Mean(avgs);
  r.full_peak_bytes = *std::max_element(full_peaks.begin(), full_peaks.end());
  r.full_avg_bytes = Mean(full_avgs);
  r.recall.assign(m.n_layers, 1.0);
  if (recall_count > 0) {
    double total = 0;
    for (int l = 0; l < m.n_layers; ++l) {
      r.recall[l] = recall_sum[l] / recall_count;
      total += r.recall[l];
    }
    r.mean_recall = total / m.n_layers;
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Output: the CSV (appended per configuration), the markdown table (rewritten from the CSV).

std::string Pct(double f) {
  return absl::StrFormat("%d %%", static_cast<int>(std::lround(f * 100)));
}

std::string MarkdownTable(const std::vector<Result>& rows, const std::vector<std::string>& failed,
                          const std::string& note) {
  std::string md =
      "# attnkit-eval: quality of each KV-cache policy\n\n"
      "Generated by `attnkit-eval` (tools/eval; docs/quality/README.md explains the method). " +
      note +
      "\n\nKL: mean KL divergence of the next-token distribution from the full-cache run's; top-1: "
      "agreement with the full-cache argmax; ppl: perplexity of the texts; peak / avg: KV bytes "
      "held relative to the full cache; recall: share of the full cache's attention mass on the "
      "tokens the policy held, per layer.\n";
  std::vector<Result> sorted = rows;
  std::stable_sort(sorted.begin(), sorted.end(), [](const Result& a, const Result& b) {
    if (a.model != b.model) return a.model < b.model;
    if (a.budget_fraction != b.budget_fraction) return a.budget_fraction < b.budget_fraction;
    return a.kl < b.kl;
  });
  std::string model;
  for (const Result& r : sorted) {
    if (r.model != model) {
      model = r.model;
      absl::StrAppend(&md, "\n## ", model, " (", TextCount(r.texts), " of ", r.tokens_per_text,
                      " tokens)\n\n| config | budget | KL | top-1 | ppl | peak | avg | ms/token | "
                      "recall per layer |\n|---|---|---|---|---|---|---|---|---|\n");
    }
    std::vector<std::string> recall;
    for (double x : r.recall) recall.push_back(absl::StrFormat("%.3f", x));
    absl::StrAppend(&md, absl::StrFormat("| %s | %s (%d) | %.4f | %.3f | %.3f | %.3f | %.3f | "
                                         "%.3f | %s |\n",
                                         r.config, Pct(r.budget_fraction), r.budget_tokens, r.kl,
                                         r.top1, r.perplexity, r.peak_ratio(), r.avg_ratio(),
                                         r.ms_per_token, absl::StrJoin(recall, " ")));
  }
  if (!failed.empty()) {
    absl::StrAppend(&md, "\n## Configurations that failed validation (not run)\n\n");
    for (const std::string& f : failed) absl::StrAppend(&md, "- ", f, "\n");
  }
  return md;
}

// The rows of a results.csv; a row that does not parse is left out with a message (its
// configuration then runs again under --resume).
std::vector<Result> ReadResults(const std::string& path) {
  std::vector<Result> rows;
  std::ifstream in(path);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line.rfind("model,", 0) == 0) continue;
    auto r = ParseCsvRow(line);
    if (r.ok()) {
      rows.push_back(*r);
    } else {
      Log(absl::StrCat("attnkit-eval: ", path, ":", number,
                       ": skipped a row: ", r.status().message()));
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// The CI bars (docs/quality/README.md).

struct Bar {
  std::string verdict;  // PASS, FAIL or SKIPPED
  std::string text;
};

const Result* Find(const std::vector<Result>& rows, const std::string& model,
                   const std::string& config, double fraction) {
  for (const Result& r : rows) {
    if (r.model == model && r.config == config && std::abs(r.budget_fraction - fraction) < 1e-6)
      return &r;
  }
  return nullptr;
}

// `which`: "core" (full cache exact, SnapKV at 50 %, R-KV against RANDOM at 25 %), "random"
// (every attention-score policy against RANDOM at 25 %) or "all".
std::vector<Bar> CheckBars(const std::vector<Result>& rows, const std::vector<std::string>& models,
                           const std::map<std::string, std::string>& invalid,
                           const std::string& which) {
  std::vector<Bar> bars;
  const bool core = which != "random", vs_random = which != "core";
  auto bar = [&](bool ok, std::string text) { bars.push_back({ok ? "PASS" : "FAIL", text}); };
  for (const std::string& model : models) {
    if (!core) break;
    const Result* full = Find(rows, model, "full_cache", 1.0);
    if (full == nullptr) {
      bars.push_back({"FAIL", absl::StrCat(model, ": no full_cache result")});
    } else {
      bar(full->kl == 0.0 && full->top1 == 1.0,
          absl::StrFormat("%s full_cache: KL %.9g (must be 0), top-1 %.6f (must be 1)", model,
                          full->kl, full->top1));
    }
  }
  if (core && std::find(models.begin(), models.end(), "tinystories-656k") != models.end()) {
    const Result* snap = Find(rows, "tinystories-656k", "snapkv", 0.5);
    if (snap == nullptr) {
      bars.push_back({"FAIL", "tinystories-656k snapkv 50 %: no result"});
    } else {
      bar(snap->top1 >= 0.8 && snap->peak_ratio() <= 0.55,
          absl::StrFormat("tinystories-656k snapkv 50 %%: top-1 %.4f (>= 0.8), peak bytes %.4f "
                          "of the full cache (<= 0.55)",
                          snap->top1, snap->peak_ratio()));
    }
  }
  // Bar 3's part that holds on both models (docs/quality/README.md): R-KV beats RANDOM at 25 %.
  // In the core set (CI), so that R-KV replaced by a cache keeping random tokens fails CI.
  for (const std::string& model : models) {
    if (which != "core" || invalid.count("random")) break;  // "all" checks it with bar 3
    const Result* random = Find(rows, model, "random", 0.25);
    const Result* rkv = Find(rows, model, "rkv", 0.25);
    if (random == nullptr || rkv == nullptr) {
      bars.push_back({"FAIL", absl::StrCat(model, " rkv / random 25 %: no result")});
    } else {
      bar(rkv->kl < random->kl, absl::StrFormat("%s rkv 25 %%: mean KL %.6f < RANDOM's %.6f", model,
                                                rkv->kl, random->kl));
    }
  }
  const std::vector<std::string> scored = {"h2o", "snapkv", "rkv", "tova"};
  for (const std::string& model : models) {
    if (!vs_random) break;
    if (invalid.count("random")) {
      bars.push_back(
          {"SKIPPED", absl::StrCat(model, ": attention-score policies vs RANDOM at 25 %: ",
                                   "the random configuration does not validate (",
                                   invalid.at("random"), ")")});
      continue;
    }
    const Result* random = Find(rows, model, "random", 0.25);
    if (random == nullptr) {
      bars.push_back({"FAIL", absl::StrCat(model, " random 25 %: no result")});
      continue;
    }
    for (const std::string& name : scored) {
      const Result* r = Find(rows, model, name, 0.25);
      if (r == nullptr) {
        bars.push_back({"FAIL", absl::StrCat(model, " ", name, " 25 %: no result")});
      } else {
        bar(r->kl < random->kl, absl::StrFormat("%s %s 25 %%: mean KL %.6f < RANDOM's %.6f", model,
                                                name, r->kl, random->kl));
      }
    }
  }
  return bars;
}

// ---------------------------------------------------------------------------------------------

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--models-dir DIR] [--model NAME]... [--configs FILE|DIR]...\n"
               "  [--budgets 0.25,0.5,0.75] [--texts N] [--text-tokens N] [--prefill N]\n"
               "  [--texts-dir DIR] [--regenerate-texts] [--out DIR] [--resume] [--jobs N]\n"
               "  [--quick] [--check] [--bars core|random|all] [--substitute-random CONFIG]\n"
               "  [--reference-text N]\n"
               "See docs/quality/README.md.\n",
               argv0);
  return 2;
}

int Main(int argc, char** argv) {
  Flags f;
  if (const char* v = std::getenv("ATTNKIT_MODELS_DIR"); v && *v) {
    f.models_dir = v;
  } else if (const char* s = std::getenv("ATTNKIT_SHARED_DIR"); s && *s) {
    f.models_dir = std::string(s) + "/models";
  } else {
    f.models_dir = std::string(ATTNKIT_SOURCE_DIR) + "/../shared/models";
  }
  bool models_given = false, texts_given = false, budgets_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--models-dir") {
      f.models_dir = value();
    } else if (a == "--model") {
      if (!models_given) f.models.clear();
      models_given = true;
      f.models.push_back(value());
    } else if (a == "--configs") {
      f.configs.push_back(value());
    } else if (a == "--budgets") {
      f.budgets.clear();
      budgets_given = true;
      for (absl::string_view b : absl::StrSplit(value(), ',')) {
        f.budgets.push_back(std::atof(std::string(b).c_str()));
        if (!(f.budgets.back() > 0 && f.budgets.back() < 1)) return Usage(argv[0]);
      }
    } else if (a == "--texts") {
      f.num_texts = std::atoi(value().c_str());
      texts_given = true;
    } else if (a == "--text-tokens") {
      f.text_tokens = std::atoi(value().c_str());
    } else if (a == "--prefill") {
      f.prefill = std::atoi(value().c_str());
    } else if (a == "--texts-dir") {
      f.texts_dir = value();
    } else if (a == "--out") {
      f.out_dir = value();
    } else if (a == "--jobs") {
      f.jobs = std::atoi(value().c_str());
    } else if (a == "--regenerate-texts") {
      f.regenerate_texts = true;
    } else if (a == "--resume") {
      f.resume = true;
    } else if (a == "--quick") {
      f.quick = true;
    } else if (a == "--check") {
      f.check = true;
    } else if (a == "--bars") {
      f.bars = value();
      if (f.bars != "core" && f.bars != "random" && f.bars != "all") {
        std::fprintf(stderr, "--bars: expected core, random or all, got %s\n", f.bars.c_str());
        return Usage(argv[0]);
      }
    } else if (a == "--reference-text") {
      f.reference_text = std::atoi(value().c_str());
      if (f.reference_text <= 0) {
        std::fprintf(stderr, "--reference-text: expected a positive number of ids\n");
        return Usage(argv[0]);
      }
    } else if (a == "--substitute-random") {
      f.substitute_random = value();
    } else {
      return Usage(argv[0]);
    }
  }
  if (f.quick) {
    if (!texts_given) f.num_texts = 4;
    if (!budgets_given) f.budgets = {0.25, 0.5};  // the budgets the bars look at
    if (f.configs.empty()) {
      const std::string dir = std::string(ATTNKIT_SOURCE_DIR) + "/tools/eval/configs/";
      for (const char* c : {"full_cache", "snapkv", "h2o", "rkv", "tova", "random"})
        f.configs.push_back(dir + c + ".textproto");
    }
  }
  if (f.configs.empty())
    f.configs.push_back(std::string(ATTNKIT_SOURCE_DIR) + "/tools/eval/configs");
  if (f.num_texts <= 0 || f.text_tokens < 16 || f.prefill < 1 || f.prefill >= f.text_tokens)
    return Usage(argv[0]);
  const int jobs = f.jobs > 0 ? f.jobs : std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(1);

  auto configs = ListConfigs(f.configs);
  if (!configs.ok()) {
    Log(absl::StrCat("attnkit-eval: ", configs.status().message()));
    return 1;
  }
  bool has_full = false;
  for (const Config& c : *configs) has_full |= c.name == "full_cache";
  if (!has_full) {
    Log("attnkit-eval: no full_cache configuration: the full-cache run is measured anyway and "
        "reported as full_cache");
  }

  // Models and their texts.
  std::vector<ModelData> data;
  std::vector<std::string> skipped_models;
  for (const std::string& name : f.models) {
    const std::string dir = f.models_dir + "/" + name;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      Log(absl::StrCat("attnkit-eval: skipped ", name, ": ", dir,
                       " is absent (set ATTNKIT_MODELS_DIR or --models-dir)"));
      skipped_models.push_back(name);
      continue;
    }
    auto model = LoadEvalModel(name, dir);
    if (!model.ok()) {
      Log(absl::StrCat("attnkit-eval: ", name, ": ", model.status().message()));
      return 1;
    }
    ModelData d;
    d.model = std::move(*model);
    if (f.reference_text > 0) {
      int prompt_tokens = 0;
      auto text = ReferenceText(dir, f.reference_text, &prompt_tokens);
      if (!text.ok()) {
        Log(absl::StrCat("attnkit-eval: ", name, ": ", text.status().message()));
        return 1;
      }
      // The flags are per run: both models' reference prompts have the same length.
      if (!data.empty() &&
          (f.prefill != prompt_tokens || f.text_tokens != static_cast<int>(text->ids.size()))) {
        Log(absl::StrCat("attnkit-eval: ", name, ": its reference prompt (", prompt_tokens,
                         " tokens) differs from the other model's; run the models separately"));
        return 1;
      }
      f.prefill = prompt_tokens;
      f.num_texts = 1;
      f.text_tokens = static_cast<int>(text->ids.size());
      d.texts.push_back(std::move(*text));
    }
    if (f.reference_text == 0) {
      const std::string path = TextsPath(f, name);
      if (f.regenerate_texts) {
        Log(absl::StrCat("attnkit-eval: ", name, ": sampling ", f.num_texts, " texts of ",
                         f.text_tokens, " tokens into ", path));
        auto texts = SampleTexts(d.model, f.num_texts, f.text_tokens);
        absl::Status st = texts.ok() ? WriteTexts(path, name, *texts) : texts.status();
        if (!st.ok()) {
          Log(absl::StrCat("attnkit-eval: ", name, ": ", st.message()));
          return 1;
        }
      }
      auto texts = ReadTexts(path);
      if (!texts.ok()) {
        Log(absl::StrCat("attnkit-eval: ", texts.status().message(),
                         "; run with --regenerate-texts to write the file again"));
        return 1;
      }
      if (static_cast<int>(texts->size()) < f.num_texts ||
          static_cast<int>(texts->at(0).ids.size()) < f.text_tokens) {
        Log(absl::StrCat("attnkit-eval: ", path, ": fewer than ", f.num_texts, " texts of ",
                         f.text_tokens, " tokens; run with --regenerate-texts"));
        return 1;
      }
      texts->resize(f.num_texts);
      for (Text& t : *texts) t.ids.resize(f.text_tokens);
      d.texts = std::move(*texts);
    }
    auto full = ParseSessionConfig(d.model.shape_text, true);
    if (!full.ok()) {
      Log(absl::StrCat("attnkit-eval: ", full.status().message()));
      return 1;
    }
    d.full = *full;
    data.push_back(std::move(d));
  }
  if (data.empty()) {
    Log("attnkit-eval: no model to evaluate (every model folder is absent)");
    return f.check ? 77 : 0;  // 77: ctest's SKIP_RETURN_CODE
  }

  // Work items: (model, config, budget). Validation failures are reported and skipped.
  struct Item {
    size_t model;
    std::string config;
    SessionOptions options;
    double fraction;
    bool random_keep = false;  // run with RandomKeepSession (--substitute-random)
  };
  std::vector<Item> items;
  std::map<std::string, std::string> invalid;  // config name -> error
  std::vector<std::string> failed;
  // Configuration-major, so that an interrupted run has every budget of both models for the
  // configurations it finished.
  if (!has_full) {
    for (size_t mi = 0; mi < data.size(); ++mi)
      items.push_back({mi, "full_cache", data[mi].full, 1.0});
  }
  // Head-split files whose labels the tool derives from the full-cache runs (ToolHeadSplit):
  // their items are made once those runs are done, one per budget b with streaming_ratio 1 - b.
  std::vector<const Config*> tool_splits;
  for (const Config& c : *configs) {
    if (ToolHeadSplit(c.text)) {
      tool_splits.push_back(&c);
      continue;
    }
    for (size_t mi = 0; mi < data.size(); ++mi) {
      const ModelData& d = data[mi];
      auto o = ParseSessionConfig(c.text + d.model.shape_text, true);
      if (!o.ok()) {
        if (!invalid.count(c.name)) {
          Log(absl::StrCat("attnkit-eval: ", c.path, ": ", o.status().message(),
                           " (skipped; the run continues)"));
          failed.push_back(absl::StrCat("`", c.name, "`: ", o.status().message()));
        }
        invalid[c.name] = std::string(o.status().message());
        continue;
      }
      if (!o->eviction.enabled && o->sparse_decode.enabled()) {
        // Quest: nothing is evicted; each budget is the tokens a decode step reads per kv head.
        for (double b : f.budgets) {
          Item it{mi, c.name, *o, b};
          it.options.sparse_decode.token_budget = std::lround(b * f.text_tokens);
          items.push_back(it);
        }
        continue;
      }
      if (!o->eviction.enabled) {
        items.push_back({mi, c.name, *o, 1.0});
        continue;
      }
      for (double b : f.budgets) {
        Item it{mi, c.name, *o, b};
        if (o->eviction.ratio_mode()) {
          // Ratio mode (schedule.compression_ratio): the budget is the share of the tokens seen
          // that each layer keeps, so a text ends holding about b of its tokens as the fixed
          // budgets do; the written start and recent areas stay.
          it.options.eviction.compression_ratio = 1.0 - b;
        } else {
          it.options.eviction =
              ScaleToBudget(o->eviction, static_cast<int>(std::lround(b * f.text_tokens)));
        }
        items.push_back(it);
      }
    }
  }
  // --substitute-random NAME: NAME runs with a cache keeping random tokens. When the library's
  // RANDOM configuration does not validate, the same cache (same seeds) at NAME's areas also stands
  // in for `random`, so that the bar comparing policies with RANDOM is evaluated and must fail for
  // NAME (a policy keeping random tokens is no better than RANDOM).
  bool tool_random = false;
  if (!f.substitute_random.empty() && invalid.count("random")) {
    std::vector<Item> baseline;
    for (const Item& it : items) {
      if (it.config == f.substitute_random && it.options.eviction.enabled) {
        Item r = it;
        r.config = "random";
        r.random_keep = true;
        baseline.push_back(r);
      }
    }
    tool_random = !baseline.empty();
    items.insert(items.end(), baseline.begin(), baseline.end());
    if (tool_random) {
      Log(absl::StrCat("attnkit-eval: random: the library's RANDOM does not validate; ",
                       "--substitute-random runs a tool-side cache keeping random tokens as ",
                       "`random` (", f.substitute_random, "'s areas)"));
      invalid.erase("random");
    }
  }

  std::error_code ec;
  fs::create_directories(f.out_dir, ec);
  const std::string csv = f.out_dir + "/results.csv";
  std::set<std::string> done;
  if (f.resume) {
    for (const Result& r : ReadResults(csv))
      done.insert(absl::StrCat(r.model, "/", r.config, "/", r.budget_fraction));
  } else {
    std::ofstream(csv, std::ios::trunc) << kCsvHeader << "\n";
  }

  // Full-cache references, one model at a time, texts in parallel.
  const auto start = std::chrono::steady_clock::now();
  for (ModelData& d : data) {
    Log(absl::StrCat("attnkit-eval: ", d.model.name, ": full-cache runs of ",
                     TextCount(static_cast<int64_t>(d.texts.size())), " (", f.text_tokens,
                     " tokens, prefill ", f.prefill, ")"));
    d.refs.resize(d.texts.size());
    std::atomic<size_t> next{0};
    std::string error;
    std::mutex mu;
    std::vector<std::thread> pool;
    for (int j = 0; j < jobs; ++j) {
      pool.emplace_back([&]() {
        at::set_num_threads(1);
        for (size_t i; (i = next++) < d.texts.size();) {
          absl::StatusOr<Reference> r = absl::InternalError("not run");
          try {
            r = RunReference(d.model, d.full, d.texts[i].ids, f.prefill);
          } catch (const std::exception& e) {
            r = absl::InternalError(e.what());
          }
          std::lock_guard<std::mutex> lock(mu);
          if (r.ok()) {
            d.refs[i] = std::move(*r);
          } else {
            error = std::string(r.status().message());
          }
        }
      });
    }
    for (auto& t : pool) t.join();
    if (!error.empty()) {
      Log(absl::StrCat("attnkit-eval: ", d.model.name, ": ", error));
      return 1;
    }
  }

  for (const Config* c : tool_splits) {
    for (size_t mi = 0; mi < data.size(); ++mi) {
      const ModelData& d = data[mi];
      auto probe = ParseSessionConfig(
          WithHeadScores(c->text, std::vector<double>(d.model.n_layers * d.model.n_kv_heads, 0.0),
                         0.5) +
              d.model.shape_text,
          true);
      if (!probe.ok()) {
        Log(absl::StrCat("attnkit-eval: ", c->path, ": ", probe.status().message(),
                         " (skipped; the run continues)"));
        failed.push_back(absl::StrCat("`", c->name, "`: ", probe.status().message()));
        break;
      }
      const std::vector<double> scores =
          MiddleAttention(d.model, d.refs, f.prefill, probe->head_split.sink_tokens,
                          probe->head_split.recent_tokens, 4);
      for (double b : f.budgets) {
        auto o =
            ParseSessionConfig(WithHeadScores(c->text, scores, 1.0 - b) + d.model.shape_text, true);
        if (!o.ok()) {
          Log(absl::StrCat("attnkit-eval: ", c->path, ": ", o.status().message()));
          continue;
        }
        items.push_back({mi, c->name, *o, b});
      }
    }
  }

  std::atomic<size_t> next{0};
  std::atomic<int> finished{0}, errors{0};
  std::mutex out_mu;
  tools::ProgressBar bar("attnkit-eval", static_cast<int64_t>(items.size()));
  std::vector<std::thread> pool;
  for (int j = 0; j < jobs; ++j) {
    pool.emplace_back([&]() {
      at::set_num_threads(1);
      for (size_t i; (i = next++) < items.size();) {
        const Item& it = items[i];
        const ModelData& d = data[it.model];
        const std::string key = absl::StrCat(d.model.name, "/", it.config, "/", it.fraction);
        if (done.count(key)) {
          ++finished;
          continue;
        }
        const bool substitute =
            it.random_keep || (it.config == f.substitute_random && it.options.eviction.enabled);
        const auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<Result> r = absl::InternalError("not run");
        try {
          r = RunConfig(d, it.config, it.options, it.fraction, f.prefill, substitute);
        } catch (const std::exception& e) {
          r = absl::InternalError(e.what());
        }
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(out_mu);
        const int n = ++finished;
        bar.Clear();
        struct Redraw {
          tools::ProgressBar& bar;
          int n;
          ~Redraw() { bar.Update(n); }
        } redraw{bar, n};
        if (!r.ok()) {
          ++errors;
          Log(absl::StrFormat("[%d/%d] %s %s %s: error: %s", n, items.size(), d.model.name,
                              it.config, Pct(it.fraction), r.status().message()));
          continue;
        }
        std::ofstream(csv, std::ios::app) << CsvRow(*r) << "\n";
        Log(
            absl::StrFormat("[%d/%d] %s %s%s %s: KL %.4f top-1 %.3f ppl %.2f peak %.3f recall "
                            "%.3f (%.1f s)",
                            n, items.size(), d.model.name, it.config,
                            substitute ? " (replaced by random tokens)" : "", Pct(it.fraction),
                            r->kl, r->top1, r->perplexity, r->peak_ratio(), r->mean_recall, secs));
      }
    });
  }
  for (auto& t : pool) t.join();
  bar.Finish();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::vector<Result> rows = ReadResults(csv);
  std::string note = absl::StrFormat(
      "%s%s of %d tokens per model, prefill %d tokens then one token per call; budgets "
      "scaled from each configuration's areas.",
      f.quick ? "Quick subset (the `quality` ctest): " : "", TextCount(f.num_texts), f.text_tokens,
      f.prefill);
  if (!f.substitute_random.empty())
    absl::StrAppend(&note, " `", f.substitute_random,
                    "` was replaced by a cache keeping random tokens (--substitute-random).");
  for (const std::string& m : skipped_models)
    absl::StrAppend(&note, " ", m, " skipped: its folder is absent.");
  std::ofstream(f.out_dir + "/results.md", std::ios::trunc) << MarkdownTable(rows, failed, note);
  Log(absl::StrFormat("attnkit-eval: %d results in %s and %s/results.md (%.0f s)", rows.size(), csv,
                      f.out_dir, wall));
  if (f.quick) Log(absl::StrCat("attnkit-eval: quick subset: ", note));

  int status = errors > 0 ? 1 : 0;
  if (f.check) {
    std::vector<std::string> models;
    for (const ModelData& d : data) models.push_back(d.model.name);
    for (const Bar& b : CheckBars(rows, models, invalid, f.bars)) {
      std::printf("BAR %s: %s\n", b.verdict.c_str(), b.text.c_str());
      if (b.verdict == "FAIL") status = 1;
    }
    for (const std::string& m : skipped_models)
      std::printf("BAR SKIPPED: %s: the model folder is absent\n", m.c_str());
    std::printf("quality bars: %s\n", status == 0 ? "passed" : "FAILED");
  }
  return status;
}

}  // namespace
}  // namespace attnkit::tools

int main(int argc, char** argv) { return attnkit::tools::Main(argc, argv); }
