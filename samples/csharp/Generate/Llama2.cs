// stories260k (llama2.c legacy format) in plain C#: weights, tokenizer and the forward pass, with
// every layer's attention handed to an AttnKit.Session. Mirrors samples/c/generate.c and
// samples/c/compress_context.c operation for operation (float32, same accumulation order), so the C
// and C# samples print the same text. Shared by the Generate and CompressContext samples.
using System;
using System.Buffers.Binary;
using System.IO;
using System.Linq;
using AttnKit;

namespace AttnKit.Samples
{
    /// <summary>The source tree: baked in at build time (AttnKitSourceDir), else found from the working directory.</summary>
    public static class SourceTree
    {
        public static string Find()
        {
            var attribute = typeof(SourceTree).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
                .OfType<System.Reflection.AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "AttnKitSourceDir");
            if (attribute?.Value is { Length: > 0 } dir) return dir;
            return Directory.GetCurrentDirectory();
        }

        /// <summary>stories260k's folder: $ATTNKIT_MODELS_DIR/stories260k, else ../shared/models/stories260k beside the source tree.</summary>
        public static string DefaultModelDir()
        {
            string? models = Environment.GetEnvironmentVariable("ATTNKIT_MODELS_DIR");
            return !string.IsNullOrEmpty(models)
                ? Path.Combine(models, "stories260k")
                : Path.Combine(Find(), "..", "shared", "models", "stories260k");
        }
    }

    /// <summary>The llama2.c header: model shape.</summary>
    public sealed record Llama2Config(int Dim, int HiddenDim, int NumLayers, int NumHeads, int NumKvHeads,
                                      int VocabSize, int SeqLen)
    {
        public int HeadDim => Dim / NumHeads;
        public int KvDim => HeadDim * NumKvHeads;
    }

    /// <summary>A llama2.c checkpoint: weights as offsets into one float array.</summary>
    public sealed class Llama2Model
    {
        private readonly float[] _w;
        private readonly int _tokenEmbedding, _rmsAtt, _wq, _wk, _wv, _wo, _rmsFfn, _w1, _w2, _w3, _rmsFinal;

        private Llama2Model(Llama2Config config, float[] weights)
        {
            Config = config;
            _w = weights;
            int L = config.NumLayers, D = config.Dim, H = config.HiddenDim, kv = config.KvDim;
            int p = 0;
            _tokenEmbedding = p; p += config.VocabSize * D;
            _rmsAtt = p; p += L * D;
            _wq = p; p += L * D * D;
            _wk = p; p += L * kv * D;
            _wv = p; p += L * kv * D;
            _wo = p; p += L * D * D;
            _rmsFfn = p; p += L * D;
            _w1 = p; p += L * H * D;
            _w2 = p; p += L * D * H;
            _w3 = p; p += L * H * D;
            _rmsFinal = p;
        }

        public Llama2Config Config { get; }

        public static Llama2Model Load(string path)
        {
            byte[] bytes = File.ReadAllBytes(path);
            if (bytes.Length < 7 * 4)
            {
                throw new InvalidDataException($"{path}: too short for a llama2.c header");
            }
            Span<int> h = stackalloc int[7];
            for (int i = 0; i < 7; ++i)
            {
                h[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4 * i));
            }
            var config = new Llama2Config(h[0], h[1], h[2], h[3], h[4], Math.Abs(h[5]), h[6]);
            long L = config.NumLayers, D = config.Dim, H = config.HiddenDim, kv = config.KvDim;
            long floats = config.VocabSize * D + L * D + L * D * D + 2 * L * kv * D + L * D * D + L * D +
                          3 * L * D * H + D;
            if (bytes.Length < 28 + floats * 4)
            {
                throw new InvalidDataException($"{path}: truncated weights");
            }
            var weights = new float[floats];
            for (long i = 0; i < floats; ++i)
            {
                weights[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)(28 + 4 * i)));
            }
            return new Llama2Model(config, weights);
        }

        /// <summary>
        /// Runs <paramref name="ids"/> through every layer, attention through <paramref name="session"/>
        /// (q, k, v and the output as [1, heads, tokens, head_dim] views of [tokens, heads, head_dim]
        /// buffers: strides, no copies); writes the last token's logits unless <paramref name="logits"/>
        /// is empty. With <paramref name="observe"/>, every layer's attention is an observe call (the
        /// tokens' queries score the cache at the positions after the sequence; the cache does not grow)
        /// and no keys or values are computed.
        /// </summary>
        public void Forward(Session session, ReadOnlySpan<int> ids, Span<float> logits, bool observe = false)
        {
            var c = Config;
            int D = c.Dim, head = c.HeadDim, kvDim = c.KvDim, H = c.HiddenDim, tokens = ids.Length;
            var x = new float[tokens * D];
            var xb = new float[D];
            var q = new float[tokens * D];
            var k = new float[tokens * kvDim];
            var v = new float[tokens * kvDim];
            var att = new float[tokens * D];
            var tmp = new float[Math.Max(H, D)];
            var h1 = new float[H];
            var h3 = new float[H];
            long firstPosition = session.NextPosition(0);
            for (int t = 0; t < tokens; ++t)
            {
                _w.AsSpan(_tokenEmbedding + ids[t] * D, D).CopyTo(x.AsSpan(t * D));
            }
            for (int l = 0; l < c.NumLayers; ++l)
            {
                for (int t = 0; t < tokens; ++t)
                {
                    RmsNorm(xb, x.AsSpan(t * D, D), _w.AsSpan(_rmsAtt + l * D, D));
                    MatVec(q.AsSpan(t * D, D), xb, _w.AsSpan(_wq + l * D * D), D, D);
                    Rope(q.AsSpan(t * D, D), head, firstPosition + t);
                    if (observe) continue;
                    MatVec(k.AsSpan(t * kvDim, kvDim), xb, _w.AsSpan(_wk + l * kvDim * D), kvDim, D);
                    MatVec(v.AsSpan(t * kvDim, kvDim), xb, _w.AsSpan(_wv + l * kvDim * D), kvDim, D);
                    Rope(k.AsSpan(t * kvDim, kvDim), head, firstPosition + t);
                }
                if (observe)
                {
                    session.Observe(l, View(q, tokens, c.NumHeads, head), View(att, tokens, c.NumHeads, head));
                }
                else
                {
                    session.Attend(l, View(q, tokens, c.NumHeads, head), View(k, tokens, c.NumKvHeads, head),
                                   View(v, tokens, c.NumKvHeads, head), View(att, tokens, c.NumHeads, head));
                }
                for (int t = 0; t < tokens; ++t)
                {
                    Span<float> xt = x.AsSpan(t * D, D);
                    MatVec(tmp.AsSpan(0, D), att.AsSpan(t * D, D), _w.AsSpan(_wo + l * D * D), D, D);
                    for (int i = 0; i < D; ++i) xt[i] += tmp[i];
                    RmsNorm(xb, xt, _w.AsSpan(_rmsFfn + l * D, D));
                    MatVec(h1, xb, _w.AsSpan(_w1 + l * H * D), H, D);
                    MatVec(h3, xb, _w.AsSpan(_w3 + l * H * D), H, D);
                    for (int i = 0; i < H; ++i) h1[i] = h1[i] / (1.0f + MathF.Exp(-h1[i])) * h3[i];
                    MatVec(tmp.AsSpan(0, D), h1, _w.AsSpan(_w2 + l * D * H), D, H);
                    for (int i = 0; i < D; ++i) xt[i] += tmp[i];
                }
            }
            if (logits.IsEmpty) return;
            RmsNorm(xb, x.AsSpan((tokens - 1) * D, D), _w.AsSpan(_rmsFinal, D));
            MatVec(logits, xb, _w.AsSpan(_tokenEmbedding), c.VocabSize, D);
        }

        // [1, heads, tokens, head_dim] over a [tokens, heads, head_dim] buffer.
        private static TensorView View(float[] data, int tokens, int heads, int headDim) =>
            new(data.AsSpan(), new long[] { 1, heads, tokens, headDim },
                new long[] { (long)tokens * heads * headDim, headDim, (long)heads * headDim, 1 });

        private static void RmsNorm(Span<float> output, ReadOnlySpan<float> x, ReadOnlySpan<float> weight)
        {
            double ss = 0;
            for (int i = 0; i < x.Length; ++i) ss += (double)x[i] * x[i];
            float scale = 1.0f / MathF.Sqrt((float)(ss / x.Length) + 1e-5f);
            for (int i = 0; i < x.Length; ++i) output[i] = weight[i] * (scale * x[i]);
        }

        // output[rows] = w[rows][cols] x[cols]
        private static void MatVec(Span<float> output, ReadOnlySpan<float> x, ReadOnlySpan<float> w, int rows, int cols)
        {
            for (int r = 0; r < rows; ++r)
            {
                float acc = 0;
                ReadOnlySpan<float> wr = w.Slice(r * cols, cols);
                for (int c = 0; c < cols; ++c) acc += wr[c] * x[c];
                output[r] = acc;
            }
        }

        // RoPE on interleaved pairs (x[2i], x[2i+1]) of each head at position `pos`, theta 10000.
        private static void Rope(Span<float> x, int head, long pos)
        {
            for (int i = 0; i < x.Length; i += 2)
            {
                float freq = 1.0f / MathF.Pow(10000.0f, (float)(i % head) / head);
                float angle = pos * freq, c = MathF.Cos(angle), s = MathF.Sin(angle);
                float a = x[i], b = x[i + 1];
                x[i] = a * c - b * s;
                x[i + 1] = a * s + b * c;
            }
        }
    }

    /// <summary>
    /// tok512.bin: the token pieces as printed (decoding is concatenation), and as stored ("&lt;0x0A&gt;"
    /// for a byte) with their merge scores, which an encoder needs.
    /// </summary>
    public sealed class Llama2Tokenizer
    {
        private readonly byte[][] _pieces;
        private readonly byte[][] _storedPieces;
        private readonly float[] _scores;

        private Llama2Tokenizer(byte[][] storedPieces, float[] scores)
        {
            _storedPieces = storedPieces;
            _scores = scores;
            _pieces = Array.ConvertAll(storedPieces, BytePiece);
        }

        public int VocabSize => _pieces.Length;

        public static Llama2Tokenizer Load(string path, int vocabSize)
        {
            byte[] bytes = File.ReadAllBytes(path);
            var pieces = new byte[vocabSize][];
            var scores = new float[vocabSize];
            int at = 4;  // max_token_length
            for (int i = 0; i < vocabSize; ++i)
            {
                if (at + 8 > bytes.Length) throw new InvalidDataException($"{path}: truncated vocabulary");
                scores[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(at));
                int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at + 4));
                at += 8;
                if (length < 0 || at + length > bytes.Length) throw new InvalidDataException($"{path}: bad piece length");
                pieces[i] = bytes.AsSpan(at, length).ToArray();
                at += length;
            }
            return new Llama2Tokenizer(pieces, scores);
        }

        /// <summary>A byte-fallback piece "&lt;0xHH&gt;" stands for the byte 0xHH (a newline is
        /// &lt;0x0A&gt;), as in llama2.c's decode; a NUL byte prints nothing. Other pieces are
        /// returned unchanged.</summary>
        private static byte[] BytePiece(byte[] piece)
        {
            if (piece.Length != 6 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || piece[5] != '>')
                return piece;
            string hex = System.Text.Encoding.ASCII.GetString(piece, 3, 2);
            if (!byte.TryParse(hex, System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte value))
                return piece;
            return value == 0 ? Array.Empty<byte>() : new[] { value };
        }

        public ReadOnlySpan<byte> Piece(int id) => _pieces[id];

        /// <summary>The piece as tok512.bin stores it ("&lt;0x0A&gt;" for the byte 0x0A).</summary>
        public ReadOnlySpan<byte> StoredPiece(int id) => _storedPieces[id];

        /// <summary>The piece's merge score (the encoder merges the best-scoring pair first).</summary>
        public float Score(int id) => _scores[id];

        /// <summary>The pieces of <paramref name="ids"/> concatenated verbatim, as UTF-8 bytes.</summary>
        public byte[] Decode(ReadOnlySpan<int> ids)
        {
            var output = new MemoryStream();
            foreach (int id in ids) output.Write(_pieces[id]);
            return output.ToArray();
        }
    }
}
