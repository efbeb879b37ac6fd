using System;
using AttnKit.Native;
using AttnKit.Proto;
using Google.Protobuf;

namespace AttnKit
{
    /// <summary>Which attnkit.v1 message a config holds.</summary>
    public enum ConfigKind
    {
        /// <summary>attnkit.v1.EvictionConfig.</summary>
        Eviction = 0,
        /// <summary>attnkit.v1.SparseAttentionConfig.</summary>
        SparseAttention = 1,
        /// <summary>attnkit.v1.VisualPruningConfig.</summary>
        VisualPruning = 2,
        /// <summary>attnkit.v1.SessionConfig.</summary>
        Session = 3,
    }

    /// <summary>
    /// Configs as serialized attnkit.v1 messages, textproto, or the generated messages
    /// (AttnKit.Proto): validation and conversion by libattnkit, so every language reports the same
    /// errors (INVALID_ARGUMENT whose message starts with the field's path).
    /// </summary>
    public static class Config
    {
        /// <summary>
        /// Checks a serialized config of <paramref name="kind"/>; throws <see cref="AttnKitException"/>
        /// (InvalidArgument, the message starting with the field's path) when it is not valid.
        /// </summary>
        public static void Validate(ConfigKind kind, ReadOnlySpan<byte> config)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_config_validate((attnkit_config_kind)kind, config);
        }

        /// <summary>As <see cref="Validate(ConfigKind, ReadOnlySpan{byte})"/> for a config in textproto.</summary>
        public static void ValidateText(ConfigKind kind, string text)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_config_validate_text((attnkit_config_kind)kind, text);
        }

        /// <summary>Validates a generated config message.</summary>
        public static void Validate(IMessage config) => Validate(KindOf(config), config.ToByteArray());

        /// <summary>Textproto to the binary wire format (parsed, not validated).</summary>
        public static byte[] TextToBinary(ConfigKind kind, string text)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_config_text_to_binary((attnkit_config_kind)kind, text, out byte[] binary);
            return binary;
        }

        /// <summary>The binary wire format to textproto.</summary>
        public static string BinaryToText(ConfigKind kind, ReadOnlySpan<byte> config)
        {
            Library.EnsureLoaded();
            AttnKitNative.attnkit_config_binary_to_text((attnkit_config_kind)kind, config, out byte[] text);
            return System.Text.Encoding.UTF8.GetString(text);
        }

        /// <summary>Parses textproto into a generated message (SessionConfig, EvictionConfig, ...).</summary>
        public static T ParseText<T>(string text) where T : IMessage<T>, new()
        {
            var kind = KindOf(new T());
            return new MessageParser<T>(() => new T()).ParseFrom(TextToBinary(kind, text));
        }

        /// <summary>A generated config message as textproto.</summary>
        public static string ToText(IMessage config) => BinaryToText(KindOf(config), config.ToByteArray());

        internal static ConfigKind KindOf(IMessage config) => config switch
        {
            null => throw new ArgumentNullException(nameof(config)),
            EvictionConfig => ConfigKind.Eviction,
            SparseAttentionConfig => ConfigKind.SparseAttention,
            VisualPruningConfig => ConfigKind.VisualPruning,
            SessionConfig => ConfigKind.Session,
            _ => throw new ArgumentException(
                $"{config.Descriptor.FullName} is not an attnkit.v1 config message", nameof(config)),
        };
    }
}
