using System;
using System.Linq;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "sparse")]
    public class SparseAttentionTests
    {
        [Fact]
        public void DensePrefillMatchesTheSessionAndAnExplicitMask()
        {
            const int heads = 2, kvHeads = 1, tokens = 6, dim = 8;
            float[] q = TestSupport.Random(heads * tokens * dim, 21), k = TestSupport.Random(kvHeads * tokens * dim, 22),
                    v = TestSupport.Random(kvHeads * tokens * dim, 23);
            using var sparse = SparseAttention.FromText("mode: DENSE block_size: 4");
            var (maskHeads, qBlocks, kBlocks) = sparse.MaskShape(heads, tokens, tokens);
            Assert.Equal((1L, 2L, 2L), (maskHeads, qBlocks, kBlocks));
            var prefill = new float[q.Length];
            double density = sparse.Prefill(new TensorView(q, 1, heads, tokens, dim), new TensorView(k, 1, kvHeads, tokens, dim),
                                            new TensorView(v, 1, kvHeads, tokens, dim), 0, new TensorView(prefill, 1, heads, tokens, dim));
            Assert.Equal(1.0, density);

            var mask = new byte[maskHeads * qBlocks * kBlocks];
            sparse.BuildMask(new TensorView(q, 1, heads, tokens, dim), new TensorView(k, 1, kvHeads, tokens, dim),
                             new TensorView(mask.AsSpan(), new long[] { 1, maskHeads, qBlocks, kBlocks }));
            Assert.Equal(new byte[] { 1, 0, 1, 1 }, mask);  // block-causal
            var masked = new float[q.Length];
            sparse.Attention(new TensorView(q, 1, heads, tokens, dim), new TensorView(k, 1, kvHeads, tokens, dim),
                             new TensorView(v, 1, kvHeads, tokens, dim), new TensorView(mask.AsSpan(), new long[] { 1, maskHeads, qBlocks, kBlocks }),
                             0, new TensorView(masked, 1, heads, tokens, dim));
            Assert.Equal(prefill, masked);

            using var session = Session.FromText(TestSupport.SessionText(layers: 1, heads: heads, kvHeads: kvHeads, headDim: dim));
            var attended = new float[q.Length];
            session.Attend(0, new TensorView(q, 1, heads, tokens, dim), new TensorView(k, 1, kvHeads, tokens, dim),
                           new TensorView(v, 1, kvHeads, tokens, dim), new TensorView(attended, 1, heads, tokens, dim));
            for (int i = 0; i < q.Length; ++i) Assert.True(Math.Abs(attended[i] - prefill[i]) < 1e-5, $"element {i}");
        }

        [Fact]
        public void BadSparseConfigAndMaskRaise()
        {
            var e = Assert.Throws<AttnKitException>(() => SparseAttention.FromText("block_size: -3"));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.Contains("block_size", e.Message);
            using var sparse = new SparseAttention(Array.Empty<byte>());
            var q = new float[2 * 4 * 8];
            var wrongMask = new byte[3];
            var m = Assert.Throws<AttnKitException>(() => sparse.Attention(new TensorView(q, 1, 2, 4, 8), new TensorView(q, 1, 2, 4, 8),
                new TensorView(q, 1, 2, 4, 8), new TensorView(wrongMask.AsSpan(), new long[] { 1, 1, 1, 3 }), 0, new TensorView(new float[q.Length], 1, 2, 4, 8)));
            Assert.Equal(StatusCode.InvalidArgument, m.Code);
            sparse.Dispose();
            Assert.Throws<ObjectDisposedException>(() => sparse.MaskShape(2, 4, 4));
        }
    }

    [Trait("Category", "visual")]
    public class VisualPrunerTests
    {
        [Fact]
        public void UniformGridKeepsEvenlySpacedTokens()
        {
            using var pruner = VisualPruner.FromText("method: UNIFORM_GRID num_keep_tokens: 4");
            const int tokens = 16, features = 6;
            float[] imageFeatures = TestSupport.Random(tokens * features, 31);
            using var selection = pruner.Select(TensorView.Null, new TensorView(imageFeatures, tokens, features), TensorView.Null);
            Assert.Equal(1, selection.NumImages);
            Assert.Equal(tokens, selection.ImageSize(0));
            long[] kept = selection.Indices(0);
            Assert.Equal(4, kept.Length);
            Assert.Equal(kept.OrderBy(i => i), kept);
            Assert.Equal(kept, selection.FlatIndices());
            // A prompt with 2 text tokens, the 16 image tokens, then 3 text tokens.
            var mask = new byte[2 + tokens + 3];
            for (int i = 2; i < 2 + tokens; ++i) mask[i] = 1;
            long[] positions = selection.KeptPositions(mask);
            Assert.Equal(new long[] { 0, 1 }.Concat(kept.Select(i => i + 2)).Concat(new long[] { 18, 19, 20 }), positions);
        }

        [Fact]
        public void CdPrunerSelectsFromRaggedImages()
        {
            using var pruner = new VisualPruner(new AttnKit.Proto.VisualPruningConfig { NumKeepTokens = 2 });
            float[] embeds = TestSupport.Random(7 * 4, 41), features = TestSupport.Random(7 * 5, 42), text = TestSupport.Random(3 * 4, 43);
            using var selection = pruner.SelectRagged(new TensorView(embeds, 7, 4), new TensorView(features, 7, 5), new long[] { 3, 4 },
                                                      new TensorView(text, 3, 4));
            Assert.Equal(2, selection.NumImages);
            Assert.Equal(2, selection.Indices(0).Length);
            Assert.Equal(2, selection.Indices(1).Length);
            Assert.All(selection.Indices(1), i => Assert.InRange(i, 0, 3));
            var e = Assert.Throws<AttnKitException>(() => pruner.Select(new TensorView(embeds, 7, 4), TensorView.Null, new TensorView(text, 3, 4)));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
        }
    }
}
