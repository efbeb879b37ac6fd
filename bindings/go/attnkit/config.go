package attnkit

import (
	"google.golang.org/protobuf/proto"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// configKind maps a config message to its attnkit_config_kind.
func configKind(config proto.Message) (capi.Enum_SS_attnkit_config_kind, error) {
	switch config.(type) {
	case *attnkitpb.EvictionConfig:
		return capi.ATTNKIT_CONFIG_EVICTION, nil
	case *attnkitpb.SparseAttentionConfig:
		return capi.ATTNKIT_CONFIG_SPARSE_ATTENTION, nil
	case *attnkitpb.VisualPruningConfig:
		return capi.ATTNKIT_CONFIG_VISUAL_PRUNING, nil
	case *attnkitpb.SessionConfig:
		return capi.ATTNKIT_CONFIG_SESSION, nil
	}
	return 0, newError(InvalidArgument, "%T is not an attnkit config message", config)
}

func marshal(config proto.Message) ([]byte, error) {
	bytes, err := proto.Marshal(config)
	if err != nil {
		return nil, newError(InvalidArgument, "serializing %T: %v", config, err)
	}
	return bytes, nil
}

// ValidateConfig checks a config (*attnkitpb.SessionConfig, EvictionConfig, SparseAttentionConfig
// or VisualPruningConfig) as the library would on creation: nil, or an INVALID_ARGUMENT *Error
// whose message starts with the field's path.
func ValidateConfig(config proto.Message) error {
	if abiErr != nil {
		return abiErr
	}
	kind, err := configKind(config)
	if err != nil {
		return err
	}
	bytes, err := marshal(config)
	if err != nil {
		return err
	}
	return fromCapi(capi.Attnkit_config_validate(kind, bytes))
}

// ParseConfigText parses textproto into config (replacing its contents) with the library's parser,
// so every language reads a config file the same way. The config is parsed, not validated.
func ParseConfigText(text string, config proto.Message) error {
	if abiErr != nil {
		return abiErr
	}
	kind, err := configKind(config)
	if err != nil {
		return err
	}
	var bytes []byte
	if err := fromCapi(capi.Attnkit_config_text_to_binary(kind, text, &bytes)); err != nil {
		return err
	}
	if err := proto.Unmarshal(bytes, config); err != nil {
		return newError(Internal, "reading the library's %T: %v", config, err)
	}
	return nil
}

// ConfigText returns config as textproto, written by the library.
func ConfigText(config proto.Message) (string, error) {
	if abiErr != nil {
		return "", abiErr
	}
	kind, err := configKind(config)
	if err != nil {
		return "", err
	}
	bytes, err := marshal(config)
	if err != nil {
		return "", err
	}
	var text []byte
	if err := fromCapi(capi.Attnkit_config_binary_to_text(kind, bytes, &text)); err != nil {
		return "", err
	}
	return string(text), nil
}
