using System;
using System.Collections.Generic;
using System.Linq;
using AttnKit.Proto;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "eviction")]
    public class EvictionPolicyTests
    {
        [Fact]
        public void ObserveThenSelectKeepsStartRecentAndTheMostAttended()
        {
            var config = new EvictionConfig
            {
                Enabled = true,
                Algorithm = EvictionAlgorithm.H2O,
                Granularity = Granularity.PerToken,
                StartTokens = 1,
                IntermediateTokens = 2,
                RecentTokens = 2,
            };
            using var policy = new EvictionPolicy(config, numLayers: 1, numHeads: 2, numKvHeads: 1);
            Assert.False(policy.NeedsKeys);
            Assert.False(policy.PerHead);
            Assert.Equal(5, policy.LayerBudget(0));
            // A host-side cache of original positions; one token per step, and every query puts most
            // of its attention on position 3 once it exists.
            var cache = new List<long>();
            for (long position = 0; position < 12; ++position)
            {
                cache.Add(position);
                int n = cache.Count;
                var attention = new float[2 * n];
                int heavy = cache.IndexOf(3);
                for (int h = 0; h < 2; ++h)
                {
                    for (int t = 0; t < n; ++t)
                        attention[h * n + t] = heavy < 0 ? 1f / n : (t == heavy ? 0.9f : 0.1f / (n - 1));
                }
                policy.Observe(0, new TensorView(attention, 1, 2, 1, n));
                long[][] rows = policy.Select(0, TensorView.Null, new long[] { n });
                Assert.Single(rows);
                cache = rows[0].Select(i => cache[(int)i]).ToList();
                Assert.True(cache.Count <= 5, string.Join(", ", cache));
            }
            // Start (0), the heavy hitter (3), the recent two (10, 11) and one more intermediate token.
            Assert.True(cache.Count == 5 && cache.Contains(0) && cache.Contains(3) && cache.Contains(10) &&
                        cache.Contains(11), string.Join(", ", cache));
            policy.Reset();
        }

        [Fact]
        public void KeyBasedPoliciesAskForKeys()
        {
            using var policy = EvictionPolicy.FromText(
                "enabled: true algorithm: KNORM granularity: PER_TOKEN start_tokens: 1 intermediate_tokens: 2 recent_tokens: 1",
                numLayers: 1, numHeads: 2, numKvHeads: 1);
            Assert.True(policy.NeedsKeys);
            const int tokens = 6, dim = 4;
            var keys = new float[tokens * dim];
            for (int t = 0; t < tokens; ++t)
                for (int d = 0; d < dim; ++d) keys[t * dim + d] = t == 2 || t == 3 ? 0.1f : 5f;  // low norm = important
            long[] kept = policy.Select(0, new TensorView(keys, 1, tokens, dim), tokens);
            Assert.Equal(new long[] { 0, 2, 3, 5 }, kept);
            var e = Assert.Throws<AttnKitException>(() => policy.Select(0, TensorView.Null, tokens));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
        }

        [Fact]
        public void BadPolicyConfigNamesTheField()
        {
            var e = Assert.Throws<AttnKitException>(() => new EvictionPolicy(
                new EvictionConfig { Enabled = true, RecentTokens = -1 }, 1, 2, 1));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
            Assert.Contains("recent_tokens", e.Message);
        }
    }
}
