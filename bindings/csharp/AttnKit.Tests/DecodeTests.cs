using System;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using AttnKit.Proto;
using AttnKit.Samples;
using Xunit;

namespace AttnKit.Tests
{
    /// <summary>A fact that is skipped, with the reason, when ../shared/models is absent.</summary>
    public sealed class ModelFactAttribute : FactAttribute
    {
        public ModelFactAttribute()
        {
            if (TestSupport.ModelDir(out string reason) == null) Skip = reason;
        }
    }

    [Trait("Category", "decode")]
    public class DecodeTests
    {
        private static (Llama2Model Model, Llama2Tokenizer Tokenizer, int[] Prompt, int[] Expected, string Text) Load()
        {
            string dir = TestSupport.ModelDir(out _)!;
            var model = Llama2Model.Load(Path.Combine(dir, "stories260K.bin"));
            var tokenizer = Llama2Tokenizer.Load(Path.Combine(dir, "tok512.bin"), model.Config.VocabSize);
            using var reference = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "reference.json")));
            var root = reference.RootElement;
            return (model, tokenizer, root.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    root.GetProperty("greedy_ids_full_cache").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    WithBytePieces(root.GetProperty("text").GetString()!));
        }

        // reference.json keeps llama2.c's byte-fallback pieces as written ("<0x0A>"); the sample's
        // tokenizer decodes them to their bytes, as llama2.c's decode does.
        private static string WithBytePieces(string text)
        {
            var bytes = new MemoryStream();
            int at = 0;
            foreach (Match m in Regex.Matches(text, "<0x([0-9A-Fa-f]{2})>"))
            {
                byte[] before = Encoding.UTF8.GetBytes(text.Substring(at, m.Index - at));
                bytes.Write(before, 0, before.Length);
                bytes.WriteByte(Convert.ToByte(m.Groups[1].Value, 16));
                at = m.Index + m.Length;
            }
            byte[] rest = Encoding.UTF8.GetBytes(text.Substring(at));
            bytes.Write(rest, 0, rest.Length);
            return Encoding.UTF8.GetString(bytes.ToArray());
        }

        private static SessionConfig ConfigFor(Llama2Config c, string policies)
        {
            var config = Config.ParseText<SessionConfig>(policies);
            config.NumLayers = c.NumLayers;
            config.NumHeads = c.NumHeads;
            config.NumKvHeads = c.NumKvHeads;
            config.HeadDim = c.HeadDim;
            config.Rope = new RopeConfig { Theta = 10000, Interleaved = true };
            return config;
        }

        private static int[] Generate(Llama2Model model, Session session, int[] prompt, int steps, out long peak)
        {
            var logits = new float[model.Config.VocabSize];
            var generated = new int[steps];
            model.Forward(session, prompt, logits);
            peak = 0;
            for (int s = 0; s < steps; ++s)
            {
                generated[s] = Array.IndexOf(logits, logits.Max());
                peak = Math.Max(peak, session.BytesHeld);
                if (s + 1 < steps) model.Forward(session, generated.AsSpan(s, 1), logits);
            }
            return generated;
        }

        [ModelFact]
        public void FullCacheGreedyDecodeMatchesTheReference()
        {
            var (model, tokenizer, prompt, expected, text) = Load();
            Assert.Equal(new[] { 64, 5, 8, 4, 8 }, new[] { model.Config.Dim, model.Config.NumLayers, model.Config.NumHeads,
                                                           model.Config.NumKvHeads, model.Config.HeadDim });
            using var session = new Session(ConfigFor(model.Config, "page_size: 16"));
            int[] generated = Generate(model, session, prompt, 100, out _);
            Assert.Equal(expected.Skip(prompt.Length).Take(100).ToArray(), generated);
            string decoded = Encoding.UTF8.GetString(tokenizer.Decode(prompt.Skip(1).Concat(generated).ToArray()));
            Assert.StartsWith(decoded, text);
            Assert.Equal(prompt.Length + 99, session.Positions(0).Length);
        }

        [ModelFact]
        public void SnapKvDecodeHoldsTheBudget()
        {
            var (model, _, prompt, expected, _) = Load();
            const string snapkv = "page_size: 16 eviction { enabled: true algorithm: SNAPKV granularity: PER_GROUP " +
                                  "group_size: 4 start_tokens: 4 intermediate_tokens: 64 recent_tokens: 32 window_size: 8 }";
            using var full = new Session(ConfigFor(model.Config, "page_size: 16"));
            using var evicting = new Session(ConfigFor(model.Config, snapkv));
            Generate(model, full, prompt, 200, out long fullPeak);
            int[] generated = Generate(model, evicting, prompt, 200, out long peak);
            long[] kept = evicting.Positions(0);
            Assert.InRange(kept.Length, 1, 100 + 4);
            Assert.True(peak < fullPeak, $"peak {peak} vs full cache {fullPeak}");
            Assert.True(evicting.Stats().Evictions > 0);
            // The first tokens are generated before the cache reaches the budget: identical.
            Assert.Equal(expected.Skip(prompt.Length).Take(40), generated.Take(40));
        }
    }
}
