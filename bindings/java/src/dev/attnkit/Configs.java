package dev.attnkit;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import dev.attnkit.internal.AttnKitNative;
import dev.attnkit.internal.attnkit_config_kind;
import dev.attnkit.proto.EvictionConfig;
import dev.attnkit.proto.SessionConfig;
import dev.attnkit.proto.SparseAttentionConfig;
import dev.attnkit.proto.VisualPruningConfig;

/**
 * The configuration messages (dev.attnkit.proto, generated from proto/attnkit/v1) and their
 * textproto form. Validation and text conversion run in the library, so the rules and the error
 * texts are the same as in every other language.
 */
public final class Configs {
  /** The configuration messages attnkit reads. */
  public enum Kind {
    EVICTION(attnkit_config_kind.ATTNKIT_CONFIG_EVICTION, EvictionConfig.class, EvictionConfig.parser()),
    SPARSE_ATTENTION(
        attnkit_config_kind.ATTNKIT_CONFIG_SPARSE_ATTENTION,
        SparseAttentionConfig.class,
        SparseAttentionConfig.parser()),
    VISUAL_PRUNING(
        attnkit_config_kind.ATTNKIT_CONFIG_VISUAL_PRUNING,
        VisualPruningConfig.class,
        VisualPruningConfig.parser()),
    SESSION(attnkit_config_kind.ATTNKIT_CONFIG_SESSION, SessionConfig.class, SessionConfig.parser());

    final attnkit_config_kind nativeKind;
    final Class<? extends Message> type;
    final Parser<? extends Message> parser;

    Kind(attnkit_config_kind nativeKind, Class<? extends Message> type, Parser<? extends Message> parser) {
      this.nativeKind = nativeKind;
      this.type = type;
      this.parser = parser;
    }

    /** The kind of a configuration message type. */
    public static Kind of(Class<? extends Message> type) {
      for (Kind kind : values()) {
        if (kind.type.equals(type)) return kind;
      }
      throw new IllegalArgumentException(type.getName() + " is not an attnkit configuration message");
    }
  }

  private Configs() {}

  /** Throws AttnKitException (INVALID_ARGUMENT, message starting with the field) when invalid. */
  public static void validate(Message config) {
    AttnKit.load();
    AttnKitNative.attnkit_config_validate(Kind.of(config.getClass()).nativeKind, config.toByteArray());
  }

  /** As {@link #validate} for textproto of {@code kind}. */
  public static void validateText(Kind kind, String text) {
    AttnKit.load();
    AttnKitNative.attnkit_config_validate_text(kind.nativeKind, text);
  }

  /** The library's textproto of {@code config}. */
  public static String toText(Message config) {
    AttnKit.load();
    byte[][] text = new byte[1][];
    AttnKitNative.attnkit_config_binary_to_text(Kind.of(config.getClass()).nativeKind, config.toByteArray(), text);
    return new String(text[0], java.nio.charset.StandardCharsets.UTF_8);
  }

  /** The serialized message of {@code kind} that {@code text} describes (parsed, not validated). */
  public static byte[] textToBinary(Kind kind, String text) {
    AttnKit.load();
    byte[][] binary = new byte[1][];
    AttnKitNative.attnkit_config_text_to_binary(kind.nativeKind, text, binary);
    return binary[0];
  }

  /** Parses textproto into a message of {@code type}, e.g. {@code fromText(s, SessionConfig.class)}. */
  public static <T extends Message> T fromText(String text, Class<T> type) {
    Kind kind = Kind.of(type);
    try {
      return type.cast(kind.parser.parseFrom(textToBinary(kind, text)));
    } catch (InvalidProtocolBufferException e) {
      throw new AttnKitException(AttnKitException.Code.INTERNAL, "the library's binary form does not parse: " + e, e);
    }
  }
}
