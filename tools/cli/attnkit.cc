// attnkit: the command-line tool installed with the library.
//   attnkit validate [--kind K] [--shape L,H,KVH,D] CONFIG...   check configs (field-path errors)
//   attnkit convert [--kind K] [--to text|binary|json] IN OUT   textproto <-> binary <-> JSON
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
#include "absl/strings/str_split.h"
#include "attnkit/config_messages.h"
#include "attnkit/config_parser.h"
#include "attnkit/v1/eviction.pb.h"
#include "attnkit/v1/session.pb.h"
#include "attnkit/v1/sparse_attention.pb.h"
#include "attnkit/v1/visual_pruning.pb.h"
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
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

absl::Status Parse(const std::string& data, Format format, google::protobuf::Message* message) {
  switch (format) {
    case Format::kText: {
      google::protobuf::TextFormat::Parser parser;
      ErrorCollector errors;
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
    auto* session = static_cast<pb::SessionConfig*>(loaded->message.get());
    const bool no_shape = session->num_layers() == 0 && session->num_heads() == 0 &&
                          session->num_kv_heads() == 0 && session->head_dim() == 0;
    if (no_shape) {
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
      note = absl::StrCat(" (no model shape in the file: checked with ", shape.layers, ",",
                          shape.heads, ",", shape.kv_heads, ",", shape.head_dim,
                          shape.given ? " from --shape" : ", stories260k's",
                          add_rope ? " and RoPE theta 10000 interleaved" : "", ")");
    }
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
  if (command == "validate" || command == "convert") {
    if (wants_help) {
      std::cout << kUsage;
      return 0;
    }
    return command == "validate" ? Validate(args) : Convert(args);
  }
  for (const char* program : {"eval", "generate", "conformance", "bench"}) {
    if (command == program) return RunProgram(command, args);
  }
  std::cerr << "attnkit: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
