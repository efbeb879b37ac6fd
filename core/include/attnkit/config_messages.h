// The protobuf message of each config kind, for tools that read configs as protobuf (tools/cli).
// Apart from config_parser.h so that the Torch-facing code including that header never sees
// protobuf types; include only where the system's protobuf headers are used (attnkit_config,
// tools).
#ifndef ATTNKIT_CONFIG_MESSAGES_H_
#define ATTNKIT_CONFIG_MESSAGES_H_

#include <memory>

#include "attnkit/config_parser.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace attnkit {

// A new, empty attnkit.v1 message of `kind` (SessionConfig, EvictionConfig, ...).
std::unique_ptr<google::protobuf::Message> NewConfigMessage(ConfigKind kind);

}  // namespace attnkit

#endif  // ATTNKIT_CONFIG_MESSAGES_H_
