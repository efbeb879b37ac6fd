using System;
using AttnKit.Proto;
using Google.Protobuf;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "errors")]
    public class ErrorTests
    {
        [Fact]
        public void BadConfigBytesRaiseInvalidArgumentNamingTheField()
        {
            var config = new SessionConfig { NumLayers = 2, NumHeads = 8, NumKvHeads = 3, HeadDim = 8 };
            var e = Assert.Throws<AttnKitException>(() => new Session(config.ToByteArray()));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.StartsWith("num_kv_heads", e.Message);
            Assert.Contains("must divide num_heads", e.Message);
        }

        [Fact]
        public void BadNestedConfigTextRaisesInvalidArgumentWithThePath()
        {
            var e = Assert.Throws<AttnKitException>(() => Session.FromText(
                TestSupport.SessionText(eviction: "eviction { enabled: true start_tokens: -4 recent_tokens: 8 }")));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.Contains("eviction.start_tokens", e.Message);
            var validate = Assert.Throws<AttnKitException>(() => Config.ValidateText(ConfigKind.Session,
                TestSupport.SessionText(eviction: "eviction { enabled: true start_tokens: -4 recent_tokens: 8 }")));
            Assert.Equal(e.Message, validate.Message);
        }

        [Fact]
        public void UnparsableConfigsRaise()
        {
            var text = Assert.Throws<AttnKitException>(() => Session.FromText("num_layers: \"two\""));
            Assert.Equal(StatusCode.InvalidArgument, text.Code);
            Assert.False(string.IsNullOrEmpty(text.Message));
            var bytes = Assert.Throws<AttnKitException>(() => new Session(new byte[] { 0xff, 0xff, 0xff }));
            Assert.Equal(StatusCode.InvalidArgument, bytes.Code);
            Assert.Throws<AttnKitException>(() => EvictionPolicy.FromText("no_such_field: 1", 2, 4, 2));
        }

        [Fact]
        public void WrongTensorShapeRaisesInvalidArgumentNamingTheTensor()
        {
            using var session = Session.FromText(TestSupport.SessionText());
            var q = new float[1 * 4 * 3 * 8];
            var kv = new float[1 * 2 * 3 * 8];
            var wrongK = new float[1 * 4 * 3 * 8];
            var output = new float[q.Length];
            var e = Assert.Throws<AttnKitException>(() => session.Attend(0, new TensorView(q, 1, 4, 3, 8),
                new TensorView(wrongK, 1, 4, 3, 8), new TensorView(kv, 1, 2, 3, 8), new TensorView(output, 1, 4, 3, 8)));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.StartsWith("k: expected [1, 2, 3, 8]", e.Message);
            var rank = Assert.Throws<AttnKitException>(() => session.Attend(0, new TensorView(q, 4, 3, 8),
                new TensorView(kv, 1, 2, 3, 8), new TensorView(kv, 1, 2, 3, 8), new TensorView(output, 1, 4, 3, 8)));
            Assert.Equal(StatusCode.InvalidArgument, rank.Code);
            Assert.Contains("q", rank.Message);
            var missing = Assert.Throws<AttnKitException>(() => session.Attend(0, new TensorView(q, 1, 4, 3, 8),
                TensorView.Null, new TensorView(kv, 1, 2, 3, 8), new TensorView(output, 1, 4, 3, 8)));
            Assert.Equal(StatusCode.InvalidArgument, missing.Code);
            // The session is still usable after rejected calls.
            session.Attend(0, new TensorView(q, 1, 4, 3, 8), new TensorView(kv, 1, 2, 3, 8),
                           new TensorView(kv, 1, 2, 3, 8), new TensorView(output, 1, 4, 3, 8));
        }

        [Fact]
        public void DoubleDisposeIsHarmless()
        {
            var session = Session.FromText(TestSupport.SessionText());
            session.Dispose();
            session.Dispose();
            var policy = EvictionPolicy.FromText("enabled: true granularity: PER_TOKEN recent_tokens: 8", 2, 4, 2);
            policy.Dispose();
            policy.Dispose();
        }

        [Fact]
        public void UseAfterDisposeRaisesObjectDisposed()
        {
            var session = Session.FromText(TestSupport.SessionText());
            session.Dispose();
            Assert.Throws<ObjectDisposedException>(() => session.BytesHeld);
            Assert.Throws<ObjectDisposedException>(() => session.Reset());
            Assert.Throws<ObjectDisposedException>(() => session.Stats());
            var q = new float[32];
            var e = Assert.Throws<ObjectDisposedException>(() => session.Attend(0, new TensorView(q, 1, 4, 1, 8),
                new TensorView(q, 1, 2, 1, 8), new TensorView(q, 1, 2, 1, 8), new TensorView(q, 1, 4, 1, 8)));
            Assert.Contains(nameof(Session), e.ObjectName);
            var policy = EvictionPolicy.FromText("enabled: true granularity: PER_TOKEN recent_tokens: 8", 2, 4, 2);
            policy.Dispose();
            Assert.Throws<ObjectDisposedException>(() => policy.NeedsKeys);
            Assert.Throws<ObjectDisposedException>(() => policy.Reset());
        }
    }
}
