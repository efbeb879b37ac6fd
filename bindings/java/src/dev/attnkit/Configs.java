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
    /** {@link EvictionConfig}, attnkit.v1.EvictionConfig. */
    EVICTION(attnkit_config_kind.ATTNKIT_CONFIG_EVICTION, EvictionConfig.class, EvictionConfig.parser()),
    /** {@link SparseAttentionConfig}, attnkit.v1.SparseAttentionConfig. */
    SPARSE_ATTENTION(
        attnkit_config_kind.ATTNKIT_CONFIG_SPARSE_ATTENTION,
        SparseAttentionConfig.class,
        SparseAttentionConfig.parser()),
    /** {@link VisualPruningConfig}, attnkit.v1.VisualPruningConfig. */
    VISUAL_PRUNING(
        attnkit_config_kind.ATTNKIT_CONFIG_VISUAL_PRUNING,
        VisualPruningConfig.class,
        VisualPruningConfig.parser()),
    /** {@link SessionConfig}, attnkit.v1.SessionConfig. */
    SESSION(attnkit_config_kind.ATTNKIT_CONFIG_SESSION, SessionConfig.class, SessionConfig.parser());

    final attnkit_config_kind nativeKind;
    final Class<? extends Message> type;
    final Parser<? extends Message> parser;

    Kind(attnkit_config_kind nativeKind, Class<? extends Message> type, Parser<? extends Message> parser) {
      this.nativeKind = nativeKind;
      this.type = type;
      this.parser = parser;
    }

    /**
     * The kind of a configuration message type.
     *
     * @param type a generated message class, e.g. {@code SessionConfig.class}
     * @return the kind whose message class is {@code type}
     * @throws IllegalArgumentException when {@code type} is not an attnkit configuration message
     */
    public static Kind of(Class<? extends Message> type) {
      for (Kind kind : values()) {
        if (kind.type.equals(type)) return kind;
      }
      throw new IllegalArgumentException(type.getName() + " is not an attnkit configuration message");
    }
  }

  private Configs() {}

  /**
   * Validates a configuration message with the library's rules.
   *
   * @param config an {@link EvictionConfig}, {@link SparseAttentionConfig}, {@link
   *     VisualPruningConfig} or {@link SessionConfig}
   * @throws AttnKitException INVALID_ARGUMENT, with a message starting with the field's path, when
   *     {@code config} is invalid
   * @throws IllegalArgumentException when {@code config} is not an attnkit configuration message
   */
  public static void validate(Message config) {
    AttnKit.load();
    AttnKitNative.attnkit_config_validate(Kind.of(config.getClass()).nativeKind, config.toByteArray());
  }

  /**
   * As {@link #validate} for textproto.
   *
   * @param kind the message the text describes
   * @param text the message in textproto
   * @throws AttnKitException INVALID_ARGUMENT when {@code text} does not parse or the message is
   *     invalid
   */
  public static void validateText(Kind kind, String text) {
    AttnKit.load();
    AttnKitNative.attnkit_config_validate_text(kind.nativeKind, text);
  }

  /**
   * The library's textproto of a configuration message.
   *
   * @param config an attnkit configuration message
   * @return {@code config} in textproto, as every language's binding writes it
   * @throws AttnKitException when the library cannot convert it
   * @throws IllegalArgumentException when {@code config} is not an attnkit configuration message
   */
  public static String toText(Message config) {
    AttnKit.load();
    byte[][] text = new byte[1][];
    AttnKitNative.attnkit_config_binary_to_text(Kind.of(config.getClass()).nativeKind, config.toByteArray(), text);
    return new String(text[0], java.nio.charset.StandardCharsets.UTF_8);
  }

  /**
   * Converts textproto to the serialized message (parsed, not validated).
   *
   * @param kind the message the text describes
   * @param text the message in textproto
   * @return the serialized message of {@code kind} that {@code text} describes
   * @throws AttnKitException INVALID_ARGUMENT when {@code text} does not parse
   */
  public static byte[] textToBinary(Kind kind, String text) {
    AttnKit.load();
    byte[][] binary = new byte[1][];
    AttnKitNative.attnkit_config_text_to_binary(kind.nativeKind, text, binary);
    return binary[0];
  }

  /**
   * Parses textproto into a message of {@code type}, e.g. {@code fromText(s,
   * SessionConfig.class)} (parsed, not validated).
   *
   * @param <T> the message class
   * @param text the message in textproto
   * @param type the message class, one of the {@link Kind}s'
   * @return the message {@code text} describes
   * @throws AttnKitException INVALID_ARGUMENT when {@code text} does not parse
   * @throws IllegalArgumentException when {@code type} is not an attnkit configuration message
   */
  public static <T extends Message> T fromText(String text, Class<T> type) {
    Kind kind = Kind.of(type);
    try {
      return type.cast(kind.parser.parseFrom(textToBinary(kind, text)));
    } catch (InvalidProtocolBufferException e) {
      throw new AttnKitException(AttnKitException.Code.INTERNAL, "the library's binary form does not parse: " + e, e);
    }
  }
}
