/* attnkit Java sample: compress a context once with queries that are not part of it
 * (dev.attnkit.Session.observe), then generate from the compressed cache (stories260k); the same
 * scenario, checks and output lines as samples/c/compress_context.c, with Generate's model code.
 *
 *   java -cp attnkit.jar:attnkit-samples.jar:attnkit-compress-context.jar:protobuf.jar \
 *        dev.attnkit.samples.CompressContext --scoring question|kvzip [--model DIR] [--context N]
 *        [--tokens N] [--question TEXT] [--fork]
 *
 * question: question-aware compression (SnapKV, the question's queries as its window); kvzip:
 * KVzip-style scoring by a "repeat the context" prompt (H2O over its queries). Each scoring runs
 * three sessions: with the observe pass, the same again (identical output) and without it (other
 * kept positions). --fork (kvzip): compress once, answer two questions from Session.fork() and from
 * a session that loads save()'s blob; each answer must equal that of compressing again. Ends with
 * "checks: ok" when every check holds (exit status 1 otherwise). */
package dev.attnkit.samples;

import dev.attnkit.*;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public final class CompressContext {
  private CompressContext() {}

  /** The eviction budget: start 4 + intermediate 44 + recent 16 tokens = 4 pages of 16 per kv head. */
  static final int BUDGET = 64, PAGE_SIZE = 16, MAX_TOKENS = 1024;

  /** llama2.c's encoder (sentencepiece BPE), as the C sample's encode(): a dummy space prefix, one
   * token per UTF-8 character (its bytes + 3 when the character has no piece), then the
   * best-scoring adjacent merge until none is left. Pieces are matched as stored. */
  static final class Encoder {
    private final Generate.Vocabulary vocabulary;
    private final Map<String, Integer> ids = new HashMap<>();

    Encoder(Generate.Vocabulary vocabulary) {
      this.vocabulary = vocabulary;
      for (int i = 0; i < vocabulary.storedPieces.length; ++i) {
        ids.putIfAbsent(key(vocabulary.storedPieces[i]), i); // the first id, as lookup()
      }
    }

    // Pieces are bytes; ISO-8859-1 maps each byte to one char, so equal keys are equal bytes.
    private static String key(byte[] piece) {
      return new String(piece, StandardCharsets.ISO_8859_1);
    }

    int[] encode(String text) {
      List<Integer> out = new ArrayList<>();
      final Integer space = ids.get(" ");
      if (!text.isEmpty() && space != null) out.add(space);
      final byte[] raw = text.getBytes(StandardCharsets.UTF_8);
      for (int at = 0; at < raw.length;) {
        int length = 1;
        while (at + length < raw.length && length < 4 && (raw[at + length] & 0xC0) == 0x80) ++length;
        final Integer id = ids.get(key(Arrays.copyOfRange(raw, at, at + length)));
        if (id != null) {
          out.add(id);
        } else {
          for (int i = 0; i < length; ++i) out.add((raw[at + i] & 0xFF) + 3);
        }
        at += length;
      }
      for (;;) {
        float best = -1e10f;
        int bestId = -1, bestAt = -1;
        for (int i = 0; i + 1 < out.size(); ++i) {
          final Integer id = ids.get(key(vocabulary.storedPieces[out.get(i)]) + key(vocabulary.storedPieces[out.get(i + 1)]));
          if (id != null && vocabulary.scores[id] > best) {
            best = vocabulary.scores[id];
            bestId = id;
            bestAt = i;
          }
        }
        if (bestAt < 0) return out.stream().mapToInt(Integer::intValue).toArray();
        out.set(bestAt, bestId);
        out.remove(bestAt + 1);
      }
    }
  }

  /** The model, the session config and the token ids of one scenario. */
  static final class Scenario {
    final Generate.Model model;
    final String sessionText;
    final int[] context, scoring, question;
    final int steps;

    Scenario(Generate.Model model, String sessionText, int[] context, int[] scoring, int[] question, int steps) {
      this.model = model;
      this.sessionText = sessionText;
      this.context = context;
      this.scoring = scoring;
      this.question = question;
      this.steps = steps;
    }

    void forward(Session session, int[] ids, int from, int tokens, float[] logits, boolean observe) {
      model.forward(session, ids, from, tokens, logits, observe);
    }
  }

  /** One run: its generated ids, the positions layer 0 (kv head 0) keeps after the first decode
   * step, and the most bytes held after any decode step. */
  static final class Run {
    final int[] generated;
    long[] kept = new long[0];
    long maxDecodeBytes;

    Run(Scenario s, boolean observe) {
      generated = new int[s.steps];
      try (Session session = Session.fromText(s.sessionText)) {
        float[] logits = new float[s.model.vocabSize];
        s.forward(session, s.context, 0, s.context.length, logits, false);
        if (observe) s.forward(session, s.scoring, 0, s.scoring.length, null, true);
        if (s.question.length > 0) s.forward(session, s.question, 0, s.question.length, logits, false);
        for (int step = 0; step < s.steps; ++step) {
          generated[step] = Generate.argmax(logits, s.model.vocabSize);
          s.forward(session, generated, step, 1, logits, false);
          maxDecodeBytes = Math.max(maxDecodeBytes, session.bytesHeld());
          if (step == 0) {
            long[] positions = session.positions(0, 0, 0);
            kept = Arrays.copyOf(positions, Math.min(positions.length, MAX_TOKENS));
          }
        }
      }
    }
  }

  /** Compress once (--fork, kvzip scoring): the context is prefilled, scored by the reconstruction
   * prompt's observe pass and evicted down to the budget by the first decode step, whose id goes
   * to {@code first[0]}. */
  static Session compressed(Scenario s, int[] first) {
    Session session = Session.fromText(s.sessionText);
    float[] logits = new float[s.model.vocabSize];
    s.forward(session, s.context, 0, s.context.length, logits, false);
    s.forward(session, s.scoring, 0, s.scoring.length, null, true);
    first[0] = Generate.argmax(logits, s.model.vocabSize);
    s.forward(session, first, 0, 1, logits, false); // evicts down to the budget
    return session;
  }

  static int[] answer(Scenario s, Session session, int[] question) {
    float[] logits = new float[s.model.vocabSize];
    s.forward(session, question, 0, question.length, logits, false);
    int[] out = new int[s.steps];
    for (int step = 0; step < s.steps; ++step) {
      out[step] = Generate.argmax(logits, s.model.vocabSize);
      s.forward(session, out, step, 1, logits, false);
    }
    return out;
  }

  /** The compressed session is saved and forked: the fork answers questions[0], a session loaded
   * from the saved blob questions[1], and each answer must equal that of a session that compresses
   * the context again and then reads the question (the fork shares the compressed pages
   * copy-on-write; the blob is a full copy). */
  static boolean runForks(Scenario s, byte[][] pieces, int[][] questions, ByteArrayOutputStream out) {
    int[] first = new int[1];
    try (Session source = compressed(s, first)) {
      final byte[] blob = source.save();
      try (Session fork = source.fork(); Session loaded = Session.fromText(s.sessionText)) {
        loaded.load(blob);
        final long held = source.bytesHeld(), forkedHeld = fork.bytesHeld();
        print(out, "compressed once: " + held + " bytes held; saved blob " + blob.length + " bytes; fork holds "
            + forkedHeld + " bytes\n");
        boolean ok = held == forkedHeld;
        final Session[] targets = {fork, loaded};
        for (int i = 0; i < 2; ++i) {
          final int[] got = answer(s, targets[i], questions[i]);
          int[] againFirst = new int[1];
          final int[] want;
          try (Session again = compressed(s, againFirst)) {
            want = answer(s, again, questions[i]);
          }
          final boolean same = againFirst[0] == first[0] && Arrays.equals(got, want);
          print(out, i == 0 ? "fork, question:" : "loaded from the blob, question:");
          printPieces(out, pieces, questions[i]);
          print(out, "\nanswer:");
          printPieces(out, pieces, got);
          print(out, "\nsame as compressing again: " + yesNo(same) + "\n");
          ok = ok && same;
        }
        return ok;
      }
    }
  }

  static void print(ByteArrayOutputStream out, String text) {
    out.writeBytes(text.getBytes(StandardCharsets.UTF_8));
  }

  static void printPieces(ByteArrayOutputStream out, byte[][] pieces, int[] ids) {
    for (int id : ids) out.writeBytes(pieces[id]);
  }

  static void printKept(ByteArrayOutputStream out, String label, Run run) {
    StringBuilder line = new StringBuilder(label + " (" + run.kept.length + "):");
    for (long position : run.kept) line.append(' ').append(position);
    print(out, line.append('\n').toString());
  }

  static String yesNo(boolean value) {
    return value ? "yes" : "no";
  }

  public static void main(String[] args) throws IOException {
    try {
      System.exit(run(args));
    } catch (Generate.Failure e) {
      System.err.println("CompressContext: " + e.getMessage());
      System.exit(1);
    } catch (AttnKitException e) {
      System.err.println("CompressContext: attnkit failed (code " + e.code().value() + "): " + e.statusMessage());
      System.exit(1);
    }
  }

  static int run(String[] args) throws IOException {
    Path modelDir = Generate.defaultModelDir();
    String scoring = null;
    String questionText = "Where did the little girl go?";
    int contextLen = 160, steps = 40;
    boolean forkQuestions = false;
    for (int i = 0; i < args.length; ++i) {
      if (i + 1 < args.length && args[i].equals("--scoring")) {
        scoring = args[++i];
      } else if (i + 1 < args.length && args[i].equals("--model")) {
        modelDir = Paths.get(args[++i]);
      } else if (i + 1 < args.length && args[i].equals("--context")) {
        contextLen = parseOrZero(args[++i]);
      } else if (i + 1 < args.length && args[i].equals("--tokens")) {
        steps = parseOrZero(args[++i]);
      } else if (i + 1 < args.length && args[i].equals("--question")) {
        questionText = args[++i];
      } else if (args[i].equals("--fork")) {
        forkQuestions = true;
      } else {
        scoring = null;
        break;
      }
    }
    final boolean kvzip = "kvzip".equals(scoring);
    if (scoring == null || (!kvzip && !scoring.equals("question")) || steps <= 0 || steps > MAX_TOKENS
        || contextLen <= BUDGET || (forkQuestions && !kvzip)) {
      System.err.println("usage: CompressContext --scoring question|kvzip [--model DIR] [--context N > " + BUDGET
          + "] [--tokens N] [--question TEXT] [--fork (kvzip only)]");
      return 2;
    }
    if (AttnKit.abiVersion() != AttnKit.ABI_VERSION) throw new Generate.Failure("libattnkit", "ABI version mismatch");

    final Generate.Model model = Generate.Model.load(modelDir.resolve("stories260K.bin"));
    final Generate.Vocabulary vocabulary = Generate.Vocabulary.load(modelDir.resolve("tok512.bin"), model.vocabSize);
    final byte[][] pieces = vocabulary.printedPieces();
    final String reference =
        new String(Files.readAllBytes(modelDir.resolve("reference.json")), StandardCharsets.UTF_8);
    final int[] available = Generate.readIds(reference, "greedy_ids_full_cache");
    if (Math.min(available.length, MAX_TOKENS) < contextLen) {
      throw new Generate.Failure("--context", "longer than reference.json's greedy text");
    }
    final int[] context = Arrays.copyOf(available, contextLen);
    final Encoder encoder = new Encoder(vocabulary);
    final int[] question = encoder.encode(questionText);
    final int[] scoringIds, asked;
    if (kvzip) {
      // KVzip's reconstruction prompt: the instruction, then the context again (without its BOS).
      final int[] instruction = encoder.encode("Repeat the story:");
      scoringIds = Arrays.copyOf(instruction, instruction.length + contextLen - 1);
      System.arraycopy(context, 1, scoringIds, instruction.length, contextLen - 1);
      asked = new int[0];
    } else {
      scoringIds = question;
      asked = question;
    }
    if (contextLen + asked.length + steps > model.seqLen) throw new Generate.Failure("--tokens", "beyond the context size");
    final String sessionText = "num_layers: " + model.nLayers + " num_heads: " + model.nHeads
        + " num_kv_heads: " + model.nKvHeads + " head_dim: " + model.headDim() + " page_size: " + PAGE_SIZE
        + " rope { theta: 10000 interleaved: true } eviction { enabled: true granularity: PER_TOKEN"
        + " start_tokens: 4 intermediate_tokens: " + (BUDGET - 20) + " recent_tokens: 16"
        + " defer_eviction_to_decode: true " + (kvzip ? "algorithm: H2O" : "algorithm: SNAPKV window_size: 16") + " }";
    final Scenario s = new Scenario(model, sessionText, context, scoringIds, asked, steps);
    final ByteArrayOutputStream out = new ByteArrayOutputStream();
    final PrintStream stdout = System.out;

    if (forkQuestions) {
      // The question-agnostic compression serves two questions: the one given and another.
      final int[][] questions = {question, encoder.encode("Who was happy?")};
      for (int[] q : questions) {
        if (contextLen + 1 + q.length + steps > model.seqLen) throw new Generate.Failure("--tokens", "beyond the context size");
      }
      print(out, "config: " + sessionText + "\n");
      final boolean ok = runForks(s, pieces, questions, out);
      print(out, "checks: " + (ok ? "ok" : "FAILED") + "\n");
      out.writeTo(stdout);
      stdout.flush();
      return ok ? 0 : 1;
    }

    final Run withObserve = new Run(s, true), again = new Run(s, true), without = new Run(s, false);
    print(out, "scoring: "
        + (kvzip ? "KVzip context reconstruction (H2O over the repeat prompt's queries)"
                 : "question-aware (SnapKV, the question's queries as the window)")
        + "; context " + contextLen + " tokens, " + scoringIds.length + " observed queries per layer, budget "
        + BUDGET + " tokens\n");
    print(out, "config: " + sessionText + "\n");
    if (!kvzip) {
      print(out, "question:");
      printPieces(out, pieces, question);
      print(out, "\n");
    }
    printKept(out, "kept by layer 0 after the first decode step, with observe", withObserve);
    printKept(out, "kept without observe", without);
    print(out, "generated:");
    printPieces(out, pieces, withObserve.generated);
    print(out, "\n");
    final long budgetBytes = (long) model.nLayers * model.nKvHeads * BUDGET * model.headDim() * 4 * 2;
    final boolean differ = !Arrays.equals(withObserve.kept, without.kept);
    final boolean deterministic =
        Arrays.equals(withObserve.generated, again.generated) && Arrays.equals(withObserve.kept, again.kept);
    final boolean within = withObserve.maxDecodeBytes == budgetBytes && withObserve.kept.length == BUDGET;
    print(out, "bytes held after each decode step: at most " + withObserve.maxDecodeBytes + " (budget: " + budgetBytes
        + ")\n");
    print(out, "kept positions differ from the run without observe: " + yesNo(differ) + "\n");
    print(out, "second run identical: " + yesNo(deterministic) + "\n");
    print(out, "bytes held equal the budget: " + yesNo(within) + "\n");
    final boolean ok = differ && deterministic && within;
    print(out, "checks: " + (ok ? "ok" : "FAILED") + "\n");
    out.writeTo(stdout);
    stdout.flush();
    return ok ? 0 : 1;
  }

  private static int parseOrZero(String text) {
    try {
      return Integer.parseInt(text);
    } catch (NumberFormatException e) {
      return 0;
    }
  }
}
