using System;
using System.Linq;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "session")]
    public class SessionTests
    {
        private const int Heads = 4, KvHeads = 2, HeadDim = 8;

        // Causal softmax(q K^T / sqrt(d)) V for one layer, all tokens seen so far, GQA; row-major
        // [heads, tokens, dim] queries and [kv_heads, tokens, dim] keys/values.
        private static float[] Reference(float[] q, float[] k, float[] v, int queries, int keys, bool causal = true)
        {
            var output = new float[Heads * queries * HeadDim];
            double scale = 1.0 / Math.Sqrt(HeadDim);
            for (int h = 0; h < Heads; ++h)
            {
                int kvh = h / (Heads / KvHeads);
                for (int i = 0; i < queries; ++i)
                {
                    int visible = causal ? keys - queries + i + 1 : keys;
                    var scores = new double[visible];
                    for (int j = 0; j < visible; ++j)
                    {
                        double dot = 0;
                        for (int d = 0; d < HeadDim; ++d)
                            dot += q[(h * queries + i) * HeadDim + d] * k[(kvh * keys + j) * HeadDim + d];
                        scores[j] = dot * scale;
                    }
                    double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
                    for (int d = 0; d < HeadDim; ++d)
                    {
                        double acc = 0;
                        for (int j = 0; j < visible; ++j) acc += Math.Exp(scores[j] - max) / sum * v[(kvh * keys + j) * HeadDim + d];
                        output[(h * queries + i) * HeadDim + d] = (float)acc;
                    }
                }
            }
            return output;
        }

        // The first `count` tokens of each kv head of a [kv_heads, tokens, dim] array.
        private static float[] Slice(float[] kv, int count, int tokens)
        {
            var slice = new float[KvHeads * count * HeadDim];
            for (int h = 0; h < KvHeads; ++h)
                Array.Copy(kv, h * tokens * HeadDim, slice, h * count * HeadDim, count * HeadDim);
            return slice;
        }

        private static void AssertClose(float[] expected, float[] actual)
        {
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; ++i)
                Assert.True(Math.Abs(expected[i] - actual[i]) < 1e-5, $"element {i}: {expected[i]} vs {actual[i]}");
        }

        [Fact]
        public void ObserveAttendsTheWholeCacheAndAppendsNothing()
        {
            using var session = Session.FromText(TestSupport.SessionText(layers: 1, heads: Heads, kvHeads: KvHeads, headDim: HeadDim,
                eviction: "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 " +
                          "intermediate_tokens: 2 recent_tokens: 1 defer_eviction_to_decode: true }"));
            const int prompt = 6, questions = 3;
            float[] q = TestSupport.Random(Heads * prompt * HeadDim, 21);
            float[] k = TestSupport.Random(KvHeads * prompt * HeadDim, 22);
            float[] v = TestSupport.Random(KvHeads * prompt * HeadDim, 23);
            session.Attend(0, new TensorView(q, 1, Heads, prompt, HeadDim), new TensorView(k, 1, KvHeads, prompt, HeadDim),
                           new TensorView(v, 1, KvHeads, prompt, HeadDim), new TensorView(new float[q.Length], 1, Heads, prompt, HeadDim));
            long held = session.BytesHeld;
            float[] question = TestSupport.Random(Heads * questions * HeadDim, 24);
            var output = new float[question.Length];
            session.Observe(0, new TensorView(question, 1, Heads, questions, HeadDim),
                            new TensorView(output, 1, Heads, questions, HeadDim));
            AssertClose(Reference(question, k, v, questions, prompt, causal: false), output);
            session.Observe(0, new TensorView(question, 1, Heads, questions, HeadDim));  // no output
            Assert.Equal(held, session.BytesHeld);
            Assert.Equal(prompt, session.NextPosition());
            Assert.Equal(prompt, session.Positions(0).Length);
            var e = Assert.Throws<AttnKitException>(() => session.Observe(1, new TensorView(question, 1, Heads, questions, HeadDim)));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.Contains("layer", e.Message);
            // The first decode step evicts down to the budget with the observed scores.
            session.Attend(0, new TensorView(new float[Heads * HeadDim], 1, Heads, 1, HeadDim),
                           new TensorView(TestSupport.Random(KvHeads * HeadDim, 25), 1, KvHeads, 1, HeadDim),
                           new TensorView(TestSupport.Random(KvHeads * HeadDim, 26), 1, KvHeads, 1, HeadDim),
                           new TensorView(new float[Heads * HeadDim], 1, Heads, 1, HeadDim));
            Assert.Equal(4, session.Positions(0).Length);
        }

        [Fact]
        public void SaveLoadAndForkGoOnBitForBit()
        {
            string text = TestSupport.SessionText(layers: 1, heads: Heads, kvHeads: KvHeads, headDim: HeadDim,
                eviction: "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 " +
                          "intermediate_tokens: 2 recent_tokens: 1 }");
            float[] Step(Session s, int tokens, int seed)
            {
                var output = new float[Heads * tokens * HeadDim];
                s.Attend(0, new TensorView(TestSupport.Random(Heads * tokens * HeadDim, seed), 1, Heads, tokens, HeadDim),
                         new TensorView(TestSupport.Random(KvHeads * tokens * HeadDim, seed + 1), 1, KvHeads, tokens, HeadDim),
                         new TensorView(TestSupport.Random(KvHeads * tokens * HeadDim, seed + 2), 1, KvHeads, tokens, HeadDim),
                         new TensorView(output, 1, Heads, tokens, HeadDim));
                return output;
            }
            using var original = Session.FromText(text);
            Step(original, 6, 40);
            byte[] blob = original.Save();
            using var loaded = Session.FromText(text);
            loaded.Load(blob);
            using var fork = original.Fork();
            for (int step = 0; step < 5; ++step)  // a 4-token budget: every step evicts
            {
                float[] want = Step(original, 1, 50 + 3 * step);
                Assert.Equal(want, Step(loaded, 1, 50 + 3 * step));
                Assert.Equal(want, Step(fork, 1, 50 + 3 * step));
            }
            Assert.Equal(original.Positions(0), loaded.Positions(0));
            byte[] before = loaded.Save();
            var e = Assert.Throws<AttnKitException>(() => loaded.Load(blob.AsSpan(0, blob.Length - 1)));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.Contains("blob: truncated", e.Message);
            Assert.Equal(before, loaded.Save());  // untouched
        }

        [Fact]
        public void RaggedCallsAndRetiredSequencesMatchSeparateSessions()
        {
            string policy = "page_size: 4 eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN " +
                            "start_tokens: 1 intermediate_tokens: 4 recent_tokens: 2 window_size: 2 }";
            string Config(int batch) => TestSupport.SessionText(layers: 1, heads: Heads, kvHeads: KvHeads,
                headDim: HeadDim, eviction: $"batch_size: {batch} {policy}");
            using var ragged = Session.FromText(Config(2));
            var own = new[] { Session.FromText(Config(1)), Session.FromText(Config(1)) };
            int seed = 100;
            void Step(long[] counts)
            {
                int width = (int)counts.Max();
                int qRow = Heads * width * HeadDim, kvRow = KvHeads * width * HeadDim;
                var q = Enumerable.Repeat(float.NaN, 2 * qRow).ToArray();  // padding: never read
                var k = Enumerable.Repeat(float.NaN, 2 * kvRow).ToArray();
                var v = Enumerable.Repeat(float.NaN, 2 * kvRow).ToArray();
                var want = new float[2][];
                for (int b = 0; b < 2; ++b)
                {
                    int n = (int)counts[b];
                    if (n == 0) continue;
                    float[] qb = TestSupport.Random(Heads * n * HeadDim, seed++);
                    float[] kb = TestSupport.Random(KvHeads * n * HeadDim, seed++);
                    float[] vb = TestSupport.Random(KvHeads * n * HeadDim, seed++);
                    for (int h = 0; h < Heads; ++h)
                        Array.Copy(qb, h * n * HeadDim, q, b * qRow + h * width * HeadDim, n * HeadDim);
                    for (int h = 0; h < KvHeads; ++h)
                    {
                        Array.Copy(kb, h * n * HeadDim, k, b * kvRow + h * width * HeadDim, n * HeadDim);
                        Array.Copy(vb, h * n * HeadDim, v, b * kvRow + h * width * HeadDim, n * HeadDim);
                    }
                    want[b] = new float[Heads * n * HeadDim];
                    own[b].Attend(0, new TensorView(qb, 1, Heads, n, HeadDim), new TensorView(kb, 1, KvHeads, n, HeadDim),
                                  new TensorView(vb, 1, KvHeads, n, HeadDim), new TensorView(want[b], 1, Heads, n, HeadDim));
                }
                var output = new float[2 * qRow];
                ragged.AttendRagged(0, new TensorView(q, 2, Heads, width, HeadDim), new TensorView(k, 2, KvHeads, width, HeadDim),
                                    new TensorView(v, 2, KvHeads, width, HeadDim), new TensorView(output, 2, Heads, width, HeadDim),
                                    counts);
                for (int b = 0; b < 2; ++b)
                {
                    int n = (int)counts[b];
                    for (int h = 0; h < Heads; ++h)
                        for (int t = 0; t < width; ++t)
                            for (int d = 0; d < HeadDim; ++d)
                            {
                                float got = output[b * qRow + (h * width + t) * HeadDim + d];
                                Assert.Equal(t < n ? want[b]![(h * n + t) * HeadDim + d] : 0f, got);
                            }
                }
                Assert.Equal(own[0].BytesHeld + own[1].BytesHeld, ragged.BytesHeld);
            }
            Step(new long[] { 9, 0 });
            Step(new long[] { 1, 12 });  // one decodes while the other prefills
            for (int i = 0; i < 6; ++i) Step(new long[] { 1, 1 });
            ragged.ResetSequence(0);
            own[0].Dispose();
            own[0] = Session.FromText(Config(1));
            Assert.Equal(0, ragged.NextPosition(0));
            Step(new long[] { 5, 1 });
            for (int i = 0; i < 4; ++i) Step(new long[] { 1, 1 });

            var bad = new float[2 * Heads * 2 * HeadDim];
            var badKv = new float[2 * KvHeads * 2 * HeadDim];
            var e = Assert.Throws<AttnKitException>(() => ragged.AttendRagged(0, new TensorView(bad, 2, Heads, 2, HeadDim),
                new TensorView(badKv, 2, KvHeads, 2, HeadDim), new TensorView(badKv, 2, KvHeads, 2, HeadDim),
                new TensorView(bad, 2, Heads, 2, HeadDim), new long[] { 3, 1 }));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.Contains("new_tokens: sequence 0 brings 3 tokens", e.Message);
            e = Assert.Throws<AttnKitException>(() => ragged.ResetSequence(2));
            Assert.Contains("sequence: must be in [0, 2), got 2", e.Message);
            foreach (var s in own) s.Dispose();
        }

        [Fact]
        public void RatioModeKeepsTheShareOfTheTokensSeen()
        {
            var config = new AttnKit.Proto.SessionConfig { NumLayers = 1, NumHeads = Heads, NumKvHeads = KvHeads, HeadDim = HeadDim };
            config.Eviction = new AttnKit.Proto.EvictionConfig
            {
                Enabled = true,
                Algorithm = AttnKit.Proto.EvictionAlgorithm.H2O,
                Granularity = AttnKit.Proto.Granularity.PerToken,
                Schedule = new AttnKit.Proto.EvictionSchedule { CompressionRatio = 0.3 },
            };
            using var session = new Session(config);
            const int prompt = 90;
            session.Attend(0, new TensorView(TestSupport.Random(Heads * prompt * HeadDim, 31), 1, Heads, prompt, HeadDim),
                           new TensorView(TestSupport.Random(KvHeads * prompt * HeadDim, 32), 1, KvHeads, prompt, HeadDim),
                           new TensorView(TestSupport.Random(KvHeads * prompt * HeadDim, 33), 1, KvHeads, prompt, HeadDim),
                           new TensorView(new float[Heads * prompt * HeadDim], 1, Heads, prompt, HeadDim));
            Assert.Equal(62, session.Positions(0).Length);  // int(90 * (1 - 0.3)) in double, as kvpress
            config.Eviction.Schedule.CompressionRatio = 1.0;
            var e = Assert.Throws<AttnKitException>(() => new Session(config));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.StartsWith("eviction.schedule.compression_ratio", e.Message);
        }

        [Fact]
        public void PrefillThenDecodeMatchesAReferenceAttention()
        {
            using var session = Session.FromText(TestSupport.SessionText(layers: 1, heads: Heads, kvHeads: KvHeads, headDim: HeadDim));
            const int prompt = 5;
            float[] q = TestSupport.Random(Heads * prompt * HeadDim, 11);
            float[] k = TestSupport.Random(KvHeads * (prompt + 1) * HeadDim, 12);
            float[] v = TestSupport.Random(KvHeads * (prompt + 1) * HeadDim, 13);
            // Prefill: the first `prompt` tokens of k and v (per kv head), as strided views.
            var output = new float[q.Length];
            long[] kvStrides = { KvHeads * (prompt + 1) * HeadDim, (prompt + 1) * HeadDim, HeadDim, 1 };
            session.Attend(0, new TensorView(q, 1, Heads, prompt, HeadDim),
                           new TensorView(k.AsSpan(), new long[] { 1, KvHeads, prompt, HeadDim }, kvStrides),
                           new TensorView(v.AsSpan(), new long[] { 1, KvHeads, prompt, HeadDim }, kvStrides),
                           new TensorView(output, 1, Heads, prompt, HeadDim));
            float[] expected = Reference(q, Slice(k, prompt, prompt + 1), Slice(v, prompt, prompt + 1), prompt, prompt);
            AssertClose(expected, output);

            // Decode: token `prompt` (the last of each kv head's rows).
            float[] q1 = TestSupport.Random(Heads * HeadDim, 14);
            var output1 = new float[q1.Length];
            session.Attend(0, new TensorView(q1, 1, Heads, 1, HeadDim),
                           new TensorView(k.AsSpan(prompt * HeadDim), new long[] { 1, KvHeads, 1, HeadDim }, kvStrides),
                           new TensorView(v.AsSpan(prompt * HeadDim), new long[] { 1, KvHeads, 1, HeadDim }, kvStrides),
                           new TensorView(output1, 1, Heads, 1, HeadDim));
            AssertClose(Reference(q1, k, v, 1, prompt + 1), output1);

            Assert.Equal(Enumerable.Range(0, prompt + 1).Select(i => (long)i).ToArray(), session.Positions(0, 0, 1));
            Assert.Equal(prompt + 1, session.NextPosition());
            Assert.True(session.BytesHeld > 0);
            var stats = session.Stats();
            Assert.Equal(2, stats.Steps);
            Assert.Equal(prompt + 1, stats.TokensSeen);
            Assert.Equal(session.BytesHeld, stats.BytesHeld);
            Assert.Equal(stats, AttnKit.Proto.SessionStats.Parser.ParseFrom(session.StatsBytes()));

            session.Reset();
            Assert.Equal(0, session.NextPosition());
            Assert.Empty(session.Positions(0));
        }

        [Fact]
        public void EvictionKeepsTheCacheWithinBudget()
        {
            using var session = Session.FromText(TestSupport.SessionText(layers: 2, heads: Heads, kvHeads: KvHeads, headDim: HeadDim,
                eviction: "page_size: 4 eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 4 recent_tokens: 4 }"));
            var output = new float[Heads * HeadDim];
            long maxHeld = 0;
            for (int step = 0; step < 40; ++step)
            {
                for (int layer = 0; layer < 2; ++layer)
                {
                    session.Attend(layer, new TensorView(TestSupport.Random(Heads * HeadDim, 100 * step + layer), 1, Heads, 1, HeadDim),
                                   new TensorView(TestSupport.Random(KvHeads * HeadDim, 7 + step), 1, KvHeads, 1, HeadDim),
                                   new TensorView(TestSupport.Random(KvHeads * HeadDim, 9 + step), 1, KvHeads, 1, HeadDim),
                                   new TensorView(output, 1, Heads, 1, HeadDim));
                }
                maxHeld = Math.Max(maxHeld, session.BytesHeld);
            }
            long[] kept = session.Positions(0);
            Assert.True(kept.Length <= 10, string.Join(", ", kept));
            Assert.True(kept.Take(2).SequenceEqual(new long[] { 0, 1 }), string.Join(", ", kept));
            Assert.Equal(39, kept[^1]);
            var stats = session.Stats();
            Assert.True(stats.Evictions > 0);
            Assert.Equal(40, stats.TokensSeen);
            Assert.True(maxHeld < 2L * 2 * KvHeads * 40 * HeadDim * 4, $"held {maxHeld} bytes");
        }
    }
}
