// attnkit: the command-line tool installed with the library.
//   attnkit validate [--kind K] [--shape L,H,KVH,D] CONFIG...   check configs (field-path errors)
//   attnkit convert [--kind K] [--to text|binary|json] IN OUT   textproto <-> binary <-> JSON
//   attnkit plan --config FILE [--shape L,H,KVH,D] [--batch B] --tokens N [--json]   KV bytes
//   attnkit eval|generate|conformance|bench ARGS...               run the program attnkit-<name>
// Configs are attnkit.v1 messages (proto/attnkit/v1). The kind of a file is taken from --kind, else
// from its first line's "# attnkit.v1.<Message>" comment (as every file in samples/configs has),
// else from the first message kind its text parses as. This file includes protobuf and so is built
// without Torch's include path (core/CMakeLists.txt says why).
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "attnkit/config_messages.h"
#include "attnkit/config_parser.h"
#include "attnkit/v1/eviction.pb.h"
#include "attnkit/v1/session.pb.h"
#include "attnkit/v1/sparse_attention.pb.h"
#include "attnkit/v1/visual_pruning.pb.h"
#include "config/kv_plan.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"

namespace {

namespace pb = ::attnkit::v1;
using ::attnkit::ConfigKind;

constexpr char kUsage[] =
    "usage: attnkit COMMAND [ARGS]\n"
    "  validate [--kind K] [--shape L,H,KVH,D] CONFIG...\n"
    "      Check every file against attnkit's config rules; prints one line per file (OK, or the\n"
    "      field path and what was expected). Exit status 1 when any file fails.\n"
    "  convert [--kind K] [--to text|binary|json] IN OUT\n"
    "      Rewrite a config in another format. Formats come from the file names (.textproto,\n"
    "      .txtpb, .pbtxt: text; .json: JSON; .pb, .binpb, .bin: binary) or --to; OUT '-' is\n"
    "      standard output.\n"
    "  plan --config FILE [--shape L,H,KVH,D] [--batch B] --tokens N [--json]\n"
    "      Before running anything: the bytes of KV pages a session with the SessionConfig FILE\n"
    "      holds after a prompt of N tokens per sequence, per layer and kv head and in total, for\n"
    "      the full cache (no eviction, the config's page format) and for the config as given\n"
    "      (eviction budgets, PyramidKV layer budgets, ratio mode, head_split streaming heads,\n"
    "      int8/int4/int2 pages with their scales and residual window; whole pages of page_size\n"
    "      tokens). Where the scores decide (AdaKV's per-head split, threshold eviction) the "
    "bytes\n"
    "      are an upper bound, marked so. --batch overrides the file's batch_size; --shape as for\n"
    "      validate. --json prints one JSON object (full_bytes, config_bytes, per-layer arrays).\n"
    "  eval | generate | conformance | bench  ARGS...\n"
    "      Run the program attnkit-NAME installed beside this one (or found in the build tree),\n"
    "      e.g. `attnkit eval --quick`, `attnkit bench decode`.\n"
    "  help [COMMAND]\n"
    "Kinds (--kind): session, eviction, sparse, visual. Without --kind, a file's first line\n"
    "\"# attnkit.v1.SessionConfig\" (or EvictionConfig, SparseAttentionConfig, "
    "VisualPruningConfig)\n"
    "names it, else the first kind its contents parse as.\n"
    "A SessionConfig without a model shape (num_layers, num_heads, num_kv_heads, head_dim all\n"
    "omitted, as in samples/configs, whose samples add the model's) is validated with --shape,\n"
    "default 5,8,4,8: stories260k, the model the samples run, with its RoPE (theta 10000,\n"
    "interleaved) unless the file has a rope message; the OK line says so.\n";

struct Kind {
  ConfigKind kind;
  const char* flag;     // --kind value
  const char* message;  // full proto name
};
constexpr Kind kKinds[] = {
    {ConfigKind::kSession, "session", "attnkit.v1.SessionConfig"},
    {ConfigKind::kEviction, "eviction", "attnkit.v1.EvictionConfig"},
    {ConfigKind::kSparseAttention, "sparse", "attnkit.v1.SparseAttentionConfig"},
    {ConfigKind::kVisualPruning, "visual", "attnkit.v1.VisualPruningConfig"},
};

enum class Format { kText, kBinary, kJson };

absl::StatusOr<Format> FormatOfName(const std::string& name, absl::string_view what) {
  for (const char* ext : {".textproto", ".txtpb", ".pbtxt", ".prototxt"}) {
    if (absl::EndsWith(name, ext)) return Format::kText;
  }
  if (absl::EndsWith(name, ".json")) return Format::kJson;
  for (const char* ext : {".pb", ".binpb", ".bin"}) {
    if (absl::EndsWith(name, ext)) return Format::kBinary;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " '", name,
                   "': cannot tell the format from the name (expected .textproto, .txtpb, "
                   ".pbtxt, .json, .pb, .binpb or .bin; or pass --to for the output)"));
}

absl::StatusOr<Format> ParseFormatFlag(const std::string& value) {
  if (value == "text") return Format::kText;
  if (value == "binary") return Format::kBinary;
  if (value == "json") return Format::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--to: expected text, binary or json, got '", value, "'"));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream data;
  data << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return data.str();
}

// Collects the text parser's errors ("line:column: message") instead of printing them.
// The parser's first error as "line:column (field.path): message".
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  ErrorCollector(const std::string& text, const google::protobuf::Descriptor* type)
      : text_(text), type_(type) {}
  void AddError(int line, int column, const std::string& message) override {
    if (!first_.empty()) return;
    const std::string path = attnkit::TextFieldPath(text_, line, column, type_);
    first_ = absl::StrCat(line + 1, ":", column + 1, path.empty() ? "" : " (" + path + ")", ": ",
                          message);
  }
  const std::string& first() const { return first_; }

 private:
  const std::string& text_;
  const google::protobuf::Descriptor* type_;
  std::string first_;
};

absl::Status Parse(const std::string& data, Format format, google::protobuf::Message* message) {
  switch (format) {
    case Format::kText: {
      google::protobuf::TextFormat::Parser parser;
      ErrorCollector errors(data, message->GetDescriptor());
      parser.RecordErrorsTo(&errors);
      if (parser.ParseFromString(data, message)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("not a valid ", message->GetDescriptor()->full_name(),
                       " textproto: ", errors.first().empty() ? "parse error" : errors.first()));
    }
    case Format::kBinary:
      if (message->ParseFromString(data)) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("not a valid binary ", message->GetDescriptor()->full_name()));
    case Format::kJson: {
      const auto status = google::protobuf::util::JsonStringToMessage(data, message);
      if (status.ok()) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat("not a valid ",
                                                     message->GetDescriptor()->full_name(),
                                                     " JSON: ", status.message().ToString()));
    }
  }
  return absl::InternalError("unknown format");
}

// The kind named by --kind, by the first line's "# attnkit.v1.<Message>" comment, or else the first
// kind the data parses as (session first). Returns the parsed message.
struct Loaded {
  const Kind* kind = nullptr;
  std::unique_ptr<google::protobuf::Message> message;
  std::string how;  // how the kind was decided, for messages
};

absl::StatusOr<Loaded> Load(const std::string& data, Format format, const Kind* forced) {
  Loaded loaded;
  if (forced != nullptr) {
    loaded.kind = forced;
    loaded.how = "--kind";
  } else if (format == Format::kText && absl::StartsWith(data, "#")) {
    const std::string first_line = data.substr(0, data.find('\n'));
    for (const Kind& kind : kKinds) {
      const std::string name = kind.message;
      const size_t at = first_line.find(name);
      // The name must end there (SessionConfig is not a prefix of another message, but be exact).
      if (at != std::string::npos &&
          (at + name.size() == first_line.size() ||
           !std::isalnum(static_cast<unsigned char>(first_line[at + name.size()])))) {
        loaded.kind = &kind;
        loaded.how = "its first line";
        break;
      }
    }
  }
  if (loaded.kind != nullptr) {
    loaded.message = attnkit::NewConfigMessage(loaded.kind->kind);
    if (auto status = Parse(data, format, loaded.message.get()); !status.ok()) return status;
    return loaded;
  }
  absl::Status first_error;
  for (const Kind& kind : kKinds) {
    auto message = attnkit::NewConfigMessage(kind.kind);
    auto status = Parse(data, format, message.get());
    if (status.ok()) {
      loaded.kind = &kind;
      loaded.message = std::move(message);
      loaded.how = "its contents";
      return loaded;
    }
    if (first_error.ok()) first_error = status;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(first_error.message(),
                   " (no attnkit.v1 config kind parses it; name one with --kind or a first line "
                   "such as \"# attnkit.v1.SessionConfig\")"));
}

struct Shape {
  int layers = 5, heads = 8, kv_heads = 4, head_dim = 8;
  bool given = false;
};

absl::StatusOr<Shape> ParseShape(const std::string& value) {
  std::vector<std::string> parts = absl::StrSplit(value, ',');
  Shape shape;
  int* fields[] = {&shape.layers, &shape.heads, &shape.kv_heads, &shape.head_dim};
  if (parts.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shape: expected four integers num_layers,num_heads,num_kv_heads,head_dim, got '", value,
        "'"));
  }
  for (int i = 0; i < 4; ++i) {
    if (!absl::SimpleAtoi(parts[i], fields[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shape: '", parts[i], "' is not an integer (in '", value, "')"));
    }
  }
  shape.given = true;
  return shape;
}

// A SessionConfig without a model shape gets `shape` (and stories260k's RoPE unless it has one);
// returns the note saying so ("" when the file has its shape).
std::string FillShape(pb::SessionConfig* session, const Shape& shape) {
  const bool no_shape = session->num_layers() == 0 && session->num_heads() == 0 &&
                        session->num_kv_heads() == 0 && session->head_dim() == 0;
  if (!no_shape) return "";
  session->set_num_layers(shape.layers);
  session->set_num_heads(shape.heads);
  session->set_num_kv_heads(shape.kv_heads);
  session->set_head_dim(shape.head_dim);
  // The samples add the model's RoPE too (stories260k: theta 10000, interleaved pairs).
  const bool add_rope = !session->has_rope();
  if (add_rope) {
    session->mutable_rope()->set_theta(10000);
    session->mutable_rope()->set_interleaved(true);
  }
  return absl::StrCat(" (no model shape in the file: checked with ", shape.layers, ",", shape.heads,
                      ",", shape.kv_heads, ",", shape.head_dim,
                      shape.given ? " from --shape" : ", stories260k's",
                      add_rope ? " and RoPE theta 10000 interleaved" : "", ")");
}

// Validates one file; returns the line to print after the file name.
absl::StatusOr<std::string> ValidateFile(const std::string& path, const Kind* forced,
                                         const Shape& shape) {
  auto data = ReadFile(path);
  if (!data.ok()) return data.status();
  Format format = Format::kText;
  if (auto by_name = FormatOfName(path, "file"); by_name.ok()) format = *by_name;
  auto loaded = Load(*data, format, forced);
  if (!loaded.ok()) return loaded.status();
  std::string note;
  if (loaded->kind->kind == ConfigKind::kSession) {
    note = FillShape(static_cast<pb::SessionConfig*>(loaded->message.get()), shape);
  }
  const auto status = attnkit::ValidateConfig(loaded->kind->kind,
                                              loaded->message->SerializeAsString(), /*text=*/false);
  if (!status.ok()) return status.status();
  return absl::StrCat("OK ", loaded->kind->message, note);
}

const Kind* KindOfFlag(const std::string& value) {
  for (const Kind& kind : kKinds) {
    if (value == kind.flag) return &kind;
  }
  return nullptr;
}

int Validate(const std::vector<std::string>& args) {
  const Kind* forced = nullptr;
  Shape shape;
  std::vector<std::string> files;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if ((a == "--kind" || a == "--shape") && i + 1 >= args.size()) {
      std::cerr << "attnkit validate: " << a << " needs a value\n";
      return 2;
    }
    if (a == "--kind") {
      forced = KindOfFlag(args[++i]);
      if (forced == nullptr) {
        std::cerr << "attnkit validate: --kind: expected session, eviction, sparse or visual, got '"
                  << args[i] << "'\n";
        return 2;
      }
    } else if (a == "--shape") {
      auto parsed = ParseShape(args[++i]);
      if (!parsed.ok()) {
        std::cerr << "attnkit validate: " << parsed.status().message() << "\n";
        return 2;
      }
      shape = *parsed;
    } else if (absl::StartsWith(a, "--")) {
      std::cerr << "attnkit validate: unknown option " << a << " (see attnkit help validate)\n";
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    std::cerr << "attnkit validate: no CONFIG given (see attnkit help validate)\n";
    return 2;
  }
  int failed = 0;
  for (const std::string& path : files) {
    auto line = ValidateFile(path, forced, shape);
    if (line.ok()) {
      std::cout << path << ": " << *line << "\n";
    } else {
      ++failed;
      std::cout << path << ": " << line.status().message() << "\n";
    }
  }
  if (files.size() > 1) {
    std::cout << files.size() - failed << " of " << files.size() << " valid\n";
  }
  return failed == 0 ? 0 : 1;
}

int Convert(const std::vector<std::string>& args) {
  const Kind* forced = nullptr;
  std::string to;
  std::vector<std::string> paths;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if ((a == "--kind" || a == "--to") && i + 1 >= args.size()) {
      std::cerr << "attnkit convert: " << a << " needs a value\n";
      return 2;
    }
    if (a == "--kind") {
      forced = KindOfFlag(args[++i]);
      if (forced == nullptr) {
        std::cerr << "attnkit convert: --kind: expected session, eviction, sparse or visual, got '"
                  << args[i] << "'\n";
        return 2;
      }
    } else if (a == "--to") {
      to = args[++i];
    } else if (absl::StartsWith(a, "--")) {
      std::cerr << "attnkit convert: unknown option " << a << " (see attnkit help convert)\n";
      return 2;
    } else {
      paths.push_back(a);
    }
  }
  if (paths.size() != 2) {
    std::cerr << "attnkit convert: expected IN and OUT, got " << paths.size()
              << " paths (see attnkit help convert)\n";
    return 2;
  }
  const std::string& in = paths[0];
  const std::string& out = paths[1];
  auto in_format = FormatOfName(in, "IN");
  auto out_format = to.empty() ? (out == "-" ? absl::StatusOr<Format>(absl::InvalidArgumentError(
                                                   "OUT '-' needs --to text|binary|json"))
                                             : FormatOfName(out, "OUT"))
                               : ParseFormatFlag(to);
  for (const auto* status : {&in_format.status(), &out_format.status()}) {
    if (!status->ok()) {
      std::cerr << "attnkit convert: " << status->message() << "\n";
      return 2;
    }
  }
  auto data = ReadFile(in);
  if (!data.ok()) {
    std::cerr << "attnkit convert: " << data.status().message() << "\n";
    return 1;
  }
  auto loaded = Load(*data, *in_format, forced);
  if (!loaded.ok()) {
    std::cerr << "attnkit convert: " << in << ": " << loaded.status().message() << "\n";
    return 1;
  }
  std::string written;
  switch (*out_format) {
    case Format::kText: {
      google::protobuf::TextFormat::Printer printer;
      printer.PrintToString(*loaded->message, &written);
      written =
          absl::StrCat("# ", loaded->kind->message, " (attnkit convert from ", in, ")\n", written);
      break;
    }
    case Format::kBinary:
      written = loaded->message->SerializeAsString();
      break;
    case Format::kJson: {
      google::protobuf::util::JsonPrintOptions options;
      options.add_whitespace = true;
      const auto status =
          google::protobuf::util::MessageToJsonString(*loaded->message, &written, options);
      if (!status.ok()) {
        std::cerr << "attnkit convert: " << status.message() << "\n";
        return 1;
      }
      break;
    }
  }
  if (out == "-") {
    std::cout.write(written.data(), static_cast<std::streamsize>(written.size()));
    return std::cout.good() ? 0 : 1;
  }
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file.write(written.data(), static_cast<std::streamsize>(written.size()));
  file.close();
  if (!file) {
    std::cerr << "attnkit convert: " << out << ": cannot write\n";
    return 1;
  }
  return 0;
}

std::string JsonArray(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) absl::StrAppend(&out, i ? ", " : "", values[i]);
  return out + "]";
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppend(&out, "\\u00", c < 0x10 ? "0" : "", absl::Hex(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string PlanJson(const attnkit::KvPlan& plan) {
  std::vector<int64_t> full, config;
  for (const auto& layer : plan.layers) {
    full.push_back(layer.full_bytes);
    config.push_back(layer.config_bytes);
  }
  std::string out = absl::StrCat(
      "{\n  \"tokens\": ", plan.tokens, ",\n  \"batch\": ", plan.batch,
      ",\n  \"full_bytes\": ", plan.full_bytes, ",\n  \"config_bytes\": ", plan.config_bytes,
      ",\n  \"exact\": ", plan.exact ? "true" : "false",
      ",\n  \"full_layer_bytes\": ", JsonArray(full),
      ",\n  \"config_layer_bytes\": ", JsonArray(config), ",\n  \"layers\": [");
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const auto& layer = plan.layers[l];
    absl::StrAppend(
        &out, l ? "," : "", "\n    {\"layer\": ", l, ", \"full_bytes\": ", layer.full_bytes,
        ", \"config_bytes\": ", layer.config_bytes, ", \"exact\": ", layer.exact ? "true" : "false",
        ", \"full_head_bytes\": ", JsonArray(layer.full_head_bytes), ", \"config_head_bytes\": ",
        layer.per_head_runtime ? "null" : JsonArray(layer.config_head_bytes),
        ", \"config_head_tokens\": ",
        layer.per_head_runtime ? "null" : JsonArray(layer.config_head_tokens), "}");
  }
  absl::StrAppend(&out, "\n  ],\n  \"notes\": [");
  for (size_t i = 0; i < plan.notes.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", JsonString(plan.notes[i]));
  }
  return out + "]\n}\n";
}

std::string PlanTable(const attnkit::KvPlan& plan, const std::string& header) {
  std::string out = header;
  for (const std::string& note : plan.notes) absl::StrAppend(&out, "  ", note, "\n");
  absl::StrAppend(&out, absl::StrFormat("%6s %6s %14s %14s  %s\n", "layer", "kvhead", "full_bytes",
                                        "config_bytes", "config_tokens"));
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    const auto& layer = plan.layers[l];
    const int64_t b = plan.batch;
    for (size_t h = 0; !layer.per_head_runtime && h < layer.config_head_bytes.size(); ++h) {
      absl::StrAppend(
          &out, absl::StrFormat("%6d %6d %14d %14d  %d%s\n", l, h, layer.full_head_bytes[h] * b,
                                layer.config_head_bytes[h] * b, layer.config_head_tokens[h],
                                layer.exact ? "" : " (at most)"));
    }
    absl::StrAppend(
        &out,
        absl::StrFormat("%6d %6s %14d %14d  %s\n", l, "all", layer.full_bytes, layer.config_bytes,
                        layer.per_head_runtime ? "upper bound: per-head split decided at run time"
                        : layer.exact          ? ""
                                               : "upper bound: decided at run time"));
  }
  absl::StrAppend(
      &out, absl::StrFormat("%13s %14d %14d  %s\n", "total", plan.full_bytes, plan.config_bytes,
                            plan.exact ? "exact" : "upper bound (see above)"));
  if (plan.batch > 1) {
    absl::StrAppend(&out, "  (bytes of all ", plan.batch,
                    " sequences; every sequence holds the same)\n");
  }
  return out;
}

int Plan(const std::vector<std::string>& args) {
  Shape shape;
  std::string config;
  int64_t tokens = 0, batch = 0;
  bool json = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool takes_value = a == "--config" || a == "--shape" || a == "--batch" || a == "--tokens";
    if (takes_value && i + 1 >= args.size()) {
      std::cerr << "attnkit plan: " << a << " needs a value\n";
      return 2;
    }
    if (a == "--config") {
      config = args[++i];
    } else if (a == "--shape") {
      auto parsed = ParseShape(args[++i]);
      if (!parsed.ok()) {
        std::cerr << "attnkit plan: " << parsed.status().message() << "\n";
        return 2;
      }
      shape = *parsed;
    } else if (a == "--batch" || a == "--tokens") {
      int64_t* value = a == "--batch" ? &batch : &tokens;
      if (!absl::SimpleAtoi(args[++i], value) || *value < 1) {
        std::cerr << "attnkit plan: " << a << ": expected a positive integer, got '" << args[i]
                  << "'\n";
        return 2;
      }
    } else if (a == "--json") {
      json = true;
    } else {
      std::cerr << "attnkit plan: unknown " << (absl::StartsWith(a, "--") ? "option " : "argument ")
                << a << " (see attnkit help plan)\n";
      return 2;
    }
  }
  if (config.empty() || tokens == 0) {
    std::cerr << "attnkit plan: " << (config.empty() ? "--config FILE" : "--tokens N")
              << " is required (see attnkit help plan)\n";
    return 2;
  }
  auto data = ReadFile(config);
  if (!data.ok()) {
    std::cerr << "attnkit plan: " << data.status().message() << "\n";
    return 1;
  }
  Format format = Format::kText;
  if (auto by_name = FormatOfName(config, "file"); by_name.ok()) format = *by_name;
  auto loaded = Load(*data, format, nullptr);
  if (!loaded.ok()) {
    std::cerr << "attnkit plan: " << config << ": " << loaded.status().message() << "\n";
    return 1;
  }
  if (loaded->kind->kind != ConfigKind::kSession) {
    std::cerr << "attnkit plan: " << config << ": expected an attnkit.v1.SessionConfig, got "
              << loaded->kind->message << " (by " << loaded->how << ")\n";
    return 1;
  }
  auto* session = static_cast<pb::SessionConfig*>(loaded->message.get());
  const std::string note = FillShape(session, shape);
  if (batch > 0) {
    if (batch > attnkit::kMaxBatchSize) {
      std::cerr << "attnkit plan: --batch: at most " << attnkit::kMaxBatchSize << ", got " << batch
                << "\n";
      return 2;
    }
    session->set_batch_size(static_cast<int>(batch));
  }
  auto options = attnkit::ParseSessionConfig(session->SerializeAsString(), /*text=*/false);
  if (!options.ok()) {
    std::cerr << "attnkit plan: " << config << ": " << options.status().message() << "\n";
    return 1;
  }
  auto plan = attnkit::PlanKvBytes(*options, tokens);
  if (!plan.ok()) {
    std::cerr << "attnkit plan: " << config << ": " << plan.status().message() << "\n";
    return 1;
  }
  if (json) {
    std::cout << PlanJson(*plan);
  } else {
    std::cout << PlanTable(
        *plan, absl::StrCat(config, ": shape ", options->num_layers, ",", options->num_heads, ",",
                            options->num_kv_heads, ",", options->head_dim, note, ", batch ",
                            options->batch_size, ", ", tokens, " prompt tokens per sequence\n"));
  }
  return 0;
}

// Runs attnkit-NAME: beside this executable (installed), else at its build-tree path.
int RunProgram(const std::string& name, const std::vector<std::string>& args) {
  std::vector<std::string> candidates;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(absl::StrCat(dir, "/attnkit-", name));
  }
#ifdef ATTNKIT_BUILD_TREE_PROGRAMS
  // "name=path|name=path": the build tree's locations, for `build/tools/attnkit NAME`.
  for (absl::string_view entry : absl::StrSplit(ATTNKIT_BUILD_TREE_PROGRAMS, '|')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (kv.first == name) candidates.push_back(kv.second);
  }
#endif
  for (const std::string& path : candidates) {
    if (access(path.c_str(), X_OK) != 0) continue;
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(path.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::cout.flush();
    execv(path.c_str(), argv.data());
    std::perror(absl::StrCat("attnkit: ", path).c_str());
    return 1;
  }
  std::cerr << "attnkit " << name << ": attnkit-" << name << " is not installed beside attnkit";
  if (!candidates.empty()) std::cerr << " (looked for " << candidates.front() << ")";
  std::cerr << "; build it (target attnkit-" << name << ") or install the package that has it\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  const bool wants_help = !args.empty() && (args[0] == "--help" || args[0] == "-h");
  if (command == "validate" || command == "convert" || command == "plan") {
    if (wants_help) {
      std::cout << kUsage;
      return 0;
    }
    if (command == "plan") return Plan(args);
    return command == "validate" ? Validate(args) : Convert(args);
  }
  for (const char* program : {"eval", "generate", "conformance", "bench"}) {
    if (command == program) return RunProgram(command, args);
  }
  std::cerr << "attnkit: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
