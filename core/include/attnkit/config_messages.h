// The protobuf message of each config kind, for tools that read configs as protobuf (tools/cli).
// Apart from config_parser.h so that the Torch-facing code including that header never sees
// protobuf types; include only where the system's protobuf headers are used (attnkit_config,
// tools).
#ifndef ATTNKIT_CONFIG_MESSAGES_H_
#define ATTNKIT_CONFIG_MESSAGES_H_

#include <memory>

#include "attnkit/config_parser.h"

#include <string>

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace attnkit {

// A new, empty attnkit.v1 message of `kind` (SessionConfig, EvictionConfig, ...).
std::unique_ptr<google::protobuf::Message> NewConfigMessage(ConfigKind kind);

// The field a textproto parser error at (line, column) was reading, as a path in `type`
// ("policies[1].snapkv.window_size"), for error messages: the fields whose braces enclose the
// position, then the last field name before it at that level. Line and column are 0-based and
// count as protobuf's tokenizer does (a tab advances the column to the next multiple of 8).
// Repeated fields get the occurrence's index. Empty at the top level before any field.
std::string TextFieldPath(const std::string& text, int line, int column,
                          const google::protobuf::Descriptor* type);

}  // namespace attnkit

#endif  // ATTNKIT_CONFIG_MESSAGES_H_
