/* attnkit Java sample: samples/c/generate.c's generation loop over stories260k (llama2.c format) in
 * plain Java, every attention call through dev.attnkit.Session.
 *
 *   java -cp attnkit.jar:attnkit-samples.jar:protobuf.jar dev.attnkit.samples.Generate \
 *        [--model DIR] [--config FILE] [--tokens N]
 *
 * DIR holds stories260K.bin, tok512.bin and reference.json (default: $ATTNKIT_MODELS_DIR/stories260k
 * or ../shared/models/stories260k beside the source tree, $ATTNKIT_SOURCE_DIR or the current
 * folder). FILE is an attnkit.v1.SessionConfig textproto without the model shape, which the sample
 * fills in (default: samples/configs/snapkv.textproto). Prints the text, the KV bytes attnkit holds,
 * tokens per second and how many generated ids agree with the full-cache greedy run in
 * reference.json: the same lines as the C sample. */
package dev.attnkit.samples;

// Both packages with a wildcard, as users write them: no simple name may mean two classes (the
// protos' outer classes end in Proto, so dev.attnkit.Session is the only Session).
import dev.attnkit.*;
import dev.attnkit.proto.*;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

public final class Generate {
  private Generate() {}

  /** A usage or input error: printed as "Generate: ..." with exit status 1. */
  static final class Failure extends RuntimeException {
    private static final long serialVersionUID = 1L;

    Failure(String what, String detail) {
      super(what + (detail != null ? ": " + detail : ""));
    }
  }

  /** stories260K.bin: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len),
   * then the float32 weights (see ../shared/models/README.md). */
  public static final class Model {
    public final int dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen;
    final float[] tokenEmbedding, rmsAtt, wq, wk, wv, wo, rmsFfn, w1, w2, w3, rmsFinal;

    private Model(ByteBuffer bytes, String path) {
      if (bytes.remaining() < 7 * 4) throw new Failure(path, "too short for a llama2.c header");
      dim = bytes.getInt();
      hiddenDim = bytes.getInt();
      nLayers = bytes.getInt();
      nHeads = bytes.getInt();
      nKvHeads = bytes.getInt();
      vocabSize = Math.abs(bytes.getInt());
      seqLen = bytes.getInt();
      final int head = dim / nHeads, kvDim = head * nKvHeads;
      final long l = nLayers, d = dim, h = hiddenDim;
      final long floats = vocabSize * d + l * d + l * d * d + 2 * l * kvDim * d + l * d * d + l * d + 3 * l * d * h + d;
      if (bytes.remaining() < floats * 4) throw new Failure(path, "truncated weights");
      tokenEmbedding = take(bytes, vocabSize * d);
      rmsAtt = take(bytes, l * d);
      wq = take(bytes, l * d * d);
      wk = take(bytes, l * kvDim * d);
      wv = take(bytes, l * kvDim * d);
      wo = take(bytes, l * d * d);
      rmsFfn = take(bytes, l * d);
      w1 = take(bytes, l * h * d);
      w2 = take(bytes, l * d * h);
      w3 = take(bytes, l * h * d);
      rmsFinal = take(bytes, d);
    }

    public static Model load(Path path) throws IOException {
      return new Model(ByteBuffer.wrap(Files.readAllBytes(path)).order(ByteOrder.LITTLE_ENDIAN), path.toString());
    }

    private static float[] take(ByteBuffer bytes, long count) {
      float[] values = new float[Math.toIntExact(count)];
      bytes.asFloatBuffer().get(values);
      bytes.position(bytes.position() + values.length * 4);
      return values;
    }

    public int headDim() {
      return dim / nHeads;
    }

    /** Runs {@code tokens} ids (from {@code ids[from]}) through every layer, attention through
     * {@code session}; writes the logits of the last token. */
    public void forward(Session session, int[] ids, int from, int tokens, float[] logits) {
      forward(session, ids, from, tokens, logits, false);
    }

    /** As {@link #forward(Session, int[], int, int, float[])}; the logits are not computed when
     * {@code logits} is null. With {@code observe}, every layer's attention is an observe call (the
     * tokens' queries score the cache at the positions after the sequence; the cache does not grow)
     * and no keys or values are computed (samples/c/compress_context.c). */
    public void forward(Session session, int[] ids, int from, int tokens, float[] logits, boolean observe) {
      final int d = dim, head = d / nHeads, kvDim = head * nKvHeads, h = hiddenDim;
      float[] x = new float[tokens * d];
      float[] xb = new float[d];
      float[] q = new float[tokens * d];
      float[] k = new float[tokens * kvDim];
      float[] v = new float[tokens * kvDim];
      float[] att = new float[tokens * d];
      float[] tmp = new float[Math.max(h, d)];
      float[] h1 = new float[h];
      float[] h3 = new float[h];
      final long firstPosition = session.nextPosition(0);
      for (int t = 0; t < tokens; ++t) {
        System.arraycopy(tokenEmbedding, ids[from + t] * d, x, t * d, d);
      }
      for (int l = 0; l < nLayers; ++l) {
        for (int t = 0; t < tokens; ++t) {
          rmsnorm(xb, 0, x, t * d, rmsAtt, l * d, d);
          matvec(q, t * d, xb, 0, wq, l * d * d, d, d);
          rope(q, t * d, d, head, firstPosition + t);
          if (observe) continue;
          matvec(k, t * kvDim, xb, 0, wk, l * kvDim * d, kvDim, d);
          matvec(v, t * kvDim, xb, 0, wv, l * kvDim * d, kvDim, d);
          rope(k, t * kvDim, kvDim, head, firstPosition + t);
        }
        if (observe) {
          session.observe(l, view(q, tokens, nHeads, head), view(att, tokens, nHeads, head));
        } else {
          session.attend(l, view(q, tokens, nHeads, head), view(k, tokens, nKvHeads, head),
              view(v, tokens, nKvHeads, head), view(att, tokens, nHeads, head));
        }
        for (int t = 0; t < tokens; ++t) {
          final int xt = t * d;
          matvec(tmp, 0, att, t * d, wo, l * d * d, d, d);
          for (int i = 0; i < d; ++i) x[xt + i] += tmp[i];
          rmsnorm(xb, 0, x, xt, rmsFfn, l * d, d);
          matvec(h1, 0, xb, 0, w1, l * h * d, h, d);
          matvec(h3, 0, xb, 0, w3, l * h * d, h, d);
          for (int i = 0; i < h; ++i) h1[i] = h1[i] / (1.0f + (float) Math.exp(-h1[i])) * h3[i];
          matvec(tmp, 0, h1, 0, w2, l * d * h, d, h);
          for (int i = 0; i < d; ++i) x[xt + i] += tmp[i];
        }
      }
      if (logits == null) return;
      rmsnorm(xb, 0, x, (tokens - 1) * d, rmsFinal, 0, d);
      matvec(logits, 0, xb, 0, tokenEmbedding, 0, vocabSize, d);
    }
  }

  /** A float32 view of logical shape [1, heads, tokens, head_dim] over a buffer laid out
   * [tokens, heads, head_dim]: strides, not copies. */
  static Tensor view(float[] data, int tokens, int heads, int headDim) {
    return Tensor.of(data, 1, heads, tokens, headDim)
        .withStrides((long) tokens * heads * headDim, headDim, (long) heads * headDim, 1);
  }

  static void rmsnorm(float[] out, int o, float[] x, int xo, float[] weight, int wo, int n) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += (double) x[xo + i] * x[xo + i];
    final float scale = 1.0f / (float) Math.sqrt((float) (ss / n) + 1e-5f);
    for (int i = 0; i < n; ++i) out[o + i] = weight[wo + i] * (scale * x[xo + i]);
  }

  /** out[rows] = w[rows][cols] x[cols] */
  static void matvec(float[] out, int o, float[] x, int xo, float[] w, int wo, int rows, int cols) {
    for (int r = 0; r < rows; ++r) {
      float acc = 0;
      final int wr = wo + r * cols;
      for (int c = 0; c < cols; ++c) acc += w[wr + c] * x[xo + c];
      out[o + r] = acc;
    }
  }

  /** RoPE on interleaved pairs (x[2i], x[2i+1]) of each head at position {@code pos}. */
  static void rope(float[] x, int xo, int n, int head, long pos) {
    for (int i = 0; i < n; i += 2) {
      final float freq = 1.0f / (float) Math.pow(10000.0f, (float) (i % head) / (float) head);
      final float angle = (float) pos * freq;
      final float c = (float) Math.cos(angle), s = (float) Math.sin(angle);
      final float a = x[xo + i], b = x[xo + i + 1];
      x[xo + i] = a * c - b * s;
      x[xo + i + 1] = a * s + b * c;
    }
  }

  public static int argmax(float[] v, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i) {
      if (v[i] > v[best]) best = i;
    }
    return best;
  }

  /** A byte-fallback piece "&lt;0xHH&gt;" stands for the byte 0xHH (a newline is &lt;0x0A&gt;), as in
   * llama2.c's decode; a NUL byte prints nothing. Other pieces are returned unchanged. */
  static byte[] bytePiece(byte[] piece) {
    if (piece.length != 6 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || piece[5] != '>') {
      return piece;
    }
    final int high = Character.digit(piece[3], 16), low = Character.digit(piece[4], 16);
    if (high < 0 || low < 0) return piece;
    final int value = high * 16 + low;
    return value == 0 ? new byte[0] : new byte[] {(byte) value};
  }

  /** tok512.bin: int32 max_token_length, then per token float32 score, int32 length, UTF-8 bytes.
   * The pieces as stored ("&lt;0x0A&gt;" for a byte) and their merge scores, as an encoder needs them. */
  public static final class Vocabulary {
    public final byte[][] storedPieces;
    public final float[] scores;

    private Vocabulary(byte[][] storedPieces, float[] scores) {
      this.storedPieces = storedPieces;
      this.scores = scores;
    }

    public static Vocabulary load(Path path, int vocabSize) throws IOException {
      ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(path)).order(ByteOrder.LITTLE_ENDIAN);
      byte[][] pieces = new byte[vocabSize][];
      float[] scores = new float[vocabSize];
      bytes.position(4);
      for (int i = 0; i < vocabSize; ++i) {
        if (bytes.remaining() < 8) throw new Failure(path.toString(), "truncated vocabulary");
        scores[i] = bytes.getFloat();
        final int length = bytes.getInt();
        if (length < 0 || length > bytes.remaining()) throw new Failure(path.toString(), "bad piece length");
        pieces[i] = new byte[length];
        bytes.get(pieces[i]);
      }
      return new Vocabulary(pieces, scores);
    }

    /** The pieces as printed: bytes, byte-fallback pieces decoded, as the C sample prints them. */
    public byte[][] printedPieces() {
      byte[][] printed = new byte[storedPieces.length][];
      for (int i = 0; i < printed.length; ++i) printed[i] = bytePiece(storedPieces[i]);
      return printed;
    }
  }

  /** tok512.bin's pieces as printed (see {@link Vocabulary#printedPieces}). */
  public static byte[][] loadTokenizer(Path path, int vocabSize) throws IOException {
    return Vocabulary.load(path, vocabSize).printedPieces();
  }

  /** The integer array {@code key} of reference.json ("key": [1, 2, ...]). */
  public static int[] readIds(String json, String key) {
    int at = json.indexOf("\"" + key + "\"");
    if (at < 0 || (at = json.indexOf('[', at)) < 0) return new int[0];
    int end = json.indexOf(']', at);
    List<Integer> ids = new ArrayList<>();
    for (String item : json.substring(at + 1, end < 0 ? json.length() : end).split(",")) {
      if (!item.trim().isEmpty()) ids.add(Integer.parseInt(item.trim()));
    }
    return ids.stream().mapToInt(Integer::intValue).toArray();
  }

  /** The session config: the file's policies with the model's shape set over them. */
  public static SessionConfig sessionConfig(String policiesText, Model model) {
    return Configs.fromText(policiesText, SessionConfig.class).toBuilder()
        .setNumLayers(model.nLayers)
        .setNumHeads(model.nHeads)
        .setNumKvHeads(model.nKvHeads)
        .setHeadDim(model.headDim())
        .setRope(RopeConfig.newBuilder().setTheta(10000).setInterleaved(true))
        .build();
  }

  public static void main(String[] args) throws IOException {
    try {
      System.exit(run(args));
    } catch (Failure e) {
      System.err.println("Generate: " + e.getMessage());
      System.exit(1);
    } catch (AttnKitException e) {
      System.err.println("Generate: attnkit failed (code " + e.code().value() + "): " + e.statusMessage());
      System.exit(1);
    }
  }

  /** $ATTNKIT_SOURCE_DIR, else the working directory. */
  static String sourceDir() {
    String sourceDir = System.getenv("ATTNKIT_SOURCE_DIR");
    return sourceDir == null || sourceDir.isEmpty() ? "." : sourceDir;
  }

  /** stories260k's folder: $ATTNKIT_MODELS_DIR/stories260k, else ../shared/models/stories260k beside the source tree. */
  static Path defaultModelDir() {
    String models = System.getenv("ATTNKIT_MODELS_DIR");
    return models != null && !models.isEmpty()
        ? Paths.get(models, "stories260k")
        : Paths.get(sourceDir(), "..", "shared", "models", "stories260k");
  }

  static int run(String[] args) throws IOException {
    String sourceDir = sourceDir();
    Path modelDir = defaultModelDir();
    Path configPath = Paths.get(sourceDir, "samples", "configs", "snapkv.textproto");
    int steps = 200;
    for (int i = 0; i < args.length; ++i) {
      if (i + 1 < args.length && args[i].equals("--model")) {
        modelDir = Paths.get(args[++i]);
      } else if (i + 1 < args.length && args[i].equals("--config")) {
        configPath = Paths.get(args[++i]);
      } else if (i + 1 < args.length && args[i].equals("--tokens")) {
        try {
          steps = Integer.parseInt(args[++i]);
        } catch (NumberFormatException e) {
          steps = 0;
        }
        if (steps <= 0) throw new Failure("--tokens", "expected a positive number");
      } else {
        System.err.println("usage: Generate [--model DIR] [--config FILE] [--tokens N]");
        return 2;
      }
    }
    if (AttnKit.abiVersion() != AttnKit.ABI_VERSION) throw new Failure("libattnkit", "ABI version mismatch");

    final Model model = Model.load(modelDir.resolve("stories260K.bin"));
    final byte[][] pieces = loadTokenizer(modelDir.resolve("tok512.bin"), model.vocabSize);
    final Path referencePath = modelDir.resolve("reference.json");
    final String reference = new String(Files.readAllBytes(referencePath), StandardCharsets.UTF_8);
    final int[] prompt = readIds(reference, "prompt_ids");
    final int[] expected = readIds(reference, "greedy_ids_full_cache");
    if (prompt.length == 0) throw new Failure(referencePath.toString(), "no prompt_ids");
    if (prompt.length + steps > model.seqLen) {
      throw new Failure("--tokens", "prompt + tokens exceed the model's context");
    }
    final String policies = new String(Files.readAllBytes(configPath), StandardCharsets.UTF_8);

    try (Session session = Session.create(sessionConfig(policies, model))) {
      float[] logits = new float[model.vocabSize];
      int[] generated = new int[steps];
      final long start = System.nanoTime();
      model.forward(session, prompt, 0, prompt.length, logits);
      long peak = 0, held;
      for (int s = 0; s < steps; ++s) {
        generated[s] = argmax(logits, model.vocabSize);
        held = session.bytesHeld();
        if (held > peak) peak = held;
        if (s + 1 < steps) model.forward(session, generated, s, 1, logits);
      }
      final double seconds = (System.nanoTime() - start) * 1e-9;

      PrintStream out = System.out;
      for (int i = 1; i < prompt.length; ++i) out.write(pieces[prompt[i]]);
      for (int s = 0; s < steps; ++s) out.write(pieces[generated[s]]);
      out.print("\n");

      held = session.bytesHeld();
      long[] positions = session.positions(0, 0, 0);
      int compared = 0, agree = 0;
      for (int s = 0; s < steps && prompt.length + s < expected.length; ++s, ++compared) {
        if (generated[s] == expected[prompt.length + s]) ++agree;
      }
      out.print(String.format(Locale.ROOT, "generated %d tokens in %.3f s: %.1f tokens/s\n", steps, seconds, steps / seconds));
      out.print(String.format(Locale.ROOT,
          "kv cache: %d bytes held at the end (peak %d), %d tokens per kv head of layer 0\n", held, peak, positions.length));
      out.print(String.format(Locale.ROOT, "reference: %d of %d generated ids match the full-cache greedy run\n", agree, compared));
      out.flush();
    }
    return 0;
  }
}
