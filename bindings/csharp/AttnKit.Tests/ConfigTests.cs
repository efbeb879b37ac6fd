using System;
using AttnKit.Proto;
using Google.Protobuf;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "config")]
    public class ConfigTests
    {
        private static SessionConfig Sample() => new()
        {
            NumLayers = 2,
            NumHeads = 4,
            NumKvHeads = 2,
            HeadDim = 8,
            PageSize = 32,
            Eviction = new EvictionConfig
            {
                Enabled = true,
                Algorithm = EvictionAlgorithm.Snapkv,
                Granularity = Granularity.PerToken,
                StartTokens = 2,
                IntermediateTokens = 8,
                RecentTokens = 4,
                WindowSize = 4,
            },
            Rope = new RopeConfig { Theta = 10000, Interleaved = true },
        };

        [Fact]
        public void BytesRoundTripThroughTextproto()
        {
            SessionConfig config = Sample();
            byte[] bytes = config.ToByteArray();
            Config.Validate(ConfigKind.Session, bytes);
            string text = Config.BinaryToText(ConfigKind.Session, bytes);
            Assert.Contains("num_kv_heads: 2", text);
            Assert.Contains("algorithm: SNAPKV", text);
            byte[] again = Config.TextToBinary(ConfigKind.Session, text);
            Assert.Equal(config, SessionConfig.Parser.ParseFrom(again));
        }

        [Fact]
        public void TextprotoRoundTripThroughMessages()
        {
            const string text = "num_layers: 3 num_heads: 8 num_kv_heads: 4 head_dim: 16 " +
                                "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 4 recent_tokens: 8 intermediate_tokens: 16 }";
            Config.ValidateText(ConfigKind.Session, text);
            var parsed = Config.ParseText<SessionConfig>(text);
            Assert.Equal(3, parsed.NumLayers);
            Assert.Equal(EvictionAlgorithm.H2O, parsed.Eviction.Algorithm);
            Assert.Equal(parsed, Config.ParseText<SessionConfig>(Config.ToText(parsed)));
            Config.Validate(parsed);
        }

        [Fact]
        public void SessionsCreateFromBytesTextAndMessages()
        {
            SessionConfig config = Sample();
            using var fromBytes = new Session(config.ToByteArray());
            using var fromMessage = new Session(config);
            using var fromText = Session.FromText(Config.ToText(config));
            Assert.Equal(0, fromBytes.BytesHeld);
            Assert.Equal(0, fromMessage.BytesHeld);
            Assert.Equal(0, fromText.BytesHeld);
            Assert.Equal(32, fromText.Stats().PageSize);
        }

        [Fact]
        public void OtherConfigKindsValidate()
        {
            var eviction = new EvictionConfig { Enabled = true, Algorithm = EvictionAlgorithm.Tova, Granularity = Granularity.PerToken, RecentTokens = 8 };
            Config.Validate(eviction);
            Assert.Equal(eviction, Config.ParseText<EvictionConfig>(Config.ToText(eviction)));
            Config.ValidateText(ConfigKind.SparseAttention, "");
            Config.ValidateText(ConfigKind.VisualPruning, Config.ToText(new VisualPruningConfig { NumKeepTokens = 4 }));
            Assert.Throws<ArgumentException>(() => Config.Validate(new RopeConfig()));
        }
    }
}
