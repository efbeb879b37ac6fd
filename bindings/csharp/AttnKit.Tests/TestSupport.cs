using System;
using System.IO;

namespace AttnKit.Tests
{
    internal static class TestSupport
    {
        /// <summary>A session config for a small model, with eviction when asked.</summary>
        public static string SessionText(int layers = 2, int heads = 4, int kvHeads = 2, int headDim = 8,
                                         string eviction = "") =>
            $"num_layers: {layers} num_heads: {heads} num_kv_heads: {kvHeads} head_dim: {headDim} {eviction}";

        public static float[] Random(int count, int seed)
        {
            var random = new System.Random(seed);
            var values = new float[count];
            for (int i = 0; i < count; ++i) values[i] = (float)(random.NextDouble() * 2 - 1);
            return values;
        }

        /// <summary>stories260k's folder, or null (with the reason) when ../shared/models is absent.</summary>
        public static string? ModelDir(out string reason)
        {
            string? models = Environment.GetEnvironmentVariable("ATTNKIT_MODELS_DIR");
            if (string.IsNullOrEmpty(models))
            {
                string? shared = Environment.GetEnvironmentVariable("ATTNKIT_SHARED_DIR");
                models = string.IsNullOrEmpty(shared) ? null : Path.Combine(shared, "models");
            }
            string? dir = models == null ? null : Path.Combine(models, "stories260k");
            if (dir == null || !File.Exists(Path.Combine(dir, "stories260K.bin")))
            {
                reason = $"stories260k not found (ATTNKIT_MODELS_DIR / ATTNKIT_SHARED_DIR: {dir ?? "unset"})";
                return null;
            }
            reason = "";
            return dir;
        }
    }
}
