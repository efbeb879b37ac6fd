// attnkit C# sample: compress a context once with queries that are not part of it
// (AttnKit.Session.Observe), then generate from the compressed cache (stories260k); the same
// scenario, checks and output lines as samples/c/compress_context.c.
//
//   CompressContext --scoring question|kvzip [--model DIR] [--context N] [--tokens N]
//                   [--question TEXT] [--fork]
//
// question: question-aware compression (SnapKV, the question's queries as its window); kvzip:
// KVzip-style scoring by a "repeat the context" prompt (H2O over its queries). Each scoring runs three
// sessions: with the observe pass, the same again (identical output) and without it (other kept
// positions). --fork (kvzip): compress once, answer two questions from Session.Fork() and from a
// session that Loads Save()'s blob; each answer must equal that of compressing again. Ends with
// "checks: ok" when every check holds (exit status 1 otherwise).
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using AttnKit;
using AttnKit.Samples;

static int Fail(string message)
{
    Console.Error.WriteLine($"CompressContext: {message}");
    return 1;
}

string modelDir = SourceTree.DefaultModelDir();
string? scoring = null;
string questionText = "Where did the little girl go?";
int contextLen = 160, steps = 40;
bool forkQuestions = false;
for (int i = 0; i < args.Length; ++i)
{
    if (i + 1 < args.Length && args[i] == "--scoring") scoring = args[++i];
    else if (i + 1 < args.Length && args[i] == "--model") modelDir = args[++i];
    else if (i + 1 < args.Length && args[i] == "--context") contextLen = int.TryParse(args[++i], out int parsedContext) ? parsedContext : 0;
    else if (i + 1 < args.Length && args[i] == "--tokens") steps = int.TryParse(args[++i], out int parsedSteps) ? parsedSteps : 0;
    else if (i + 1 < args.Length && args[i] == "--question") questionText = args[++i];
    else if (args[i] == "--fork") forkQuestions = true;
    else
    {
        scoring = null;
        break;
    }
}
bool kvzip = scoring == "kvzip";
if (scoring == null || (!kvzip && scoring != "question") || steps <= 0 || steps > Limits.MaxTokens ||
    contextLen <= Limits.Budget || (forkQuestions && !kvzip))
{
    Console.Error.WriteLine($"usage: CompressContext --scoring question|kvzip [--model DIR] [--context N > {Limits.Budget}] " +
                            "[--tokens N] [--question TEXT] [--fork (kvzip only)]");
    return 2;
}

try
{
    Library.EnsureLoaded();  // the ABI check
    var model = Llama2Model.Load(Path.Combine(modelDir, "stories260K.bin"));
    var c = model.Config;
    var tokenizer = Llama2Tokenizer.Load(Path.Combine(modelDir, "tok512.bin"), c.VocabSize);
    using var reference = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(modelDir, "reference.json")));
    int[] available = reference.RootElement.GetProperty("greedy_ids_full_cache").EnumerateArray()
        .Select(e => e.GetInt32()).Take(Limits.MaxTokens).ToArray();
    if (available.Length < contextLen) return Fail("--context: longer than reference.json's greedy text");
    int[] context = available[..contextLen];
    var encoder = new Encoder(tokenizer);
    int[] question = encoder.Encode(questionText);
    int[] scoringIds, asked;
    if (kvzip)
    {
        // KVzip's reconstruction prompt: the instruction, then the context again (without its BOS).
        scoringIds = encoder.Encode("Repeat the story:").Concat(context.Skip(1)).ToArray();
        asked = Array.Empty<int>();
    }
    else
    {
        scoringIds = question;
        asked = question;
    }
    if (contextLen + asked.Length + steps > c.SeqLen) return Fail("--tokens: beyond the context size");
    string sessionText =
        $"num_layers: {c.NumLayers} num_heads: {c.NumHeads} num_kv_heads: {c.NumKvHeads} head_dim: {c.HeadDim} " +
        $"page_size: {Limits.PageSize} rope {{ theta: 10000 interleaved: true }} " +
        "eviction { enabled: true granularity: PER_TOKEN start_tokens: 4 " +
        $"intermediate_tokens: {Limits.Budget - 20} recent_tokens: 16 defer_eviction_to_decode: true " +
        $"{(kvzip ? "algorithm: H2O" : "algorithm: SNAPKV window_size: 16")} }}";
    var s = new Scenario(model, sessionText, context, scoringIds, asked, steps);
    using var stdout = Console.OpenStandardOutput();
    void Print(string text) => stdout.Write(Encoding.UTF8.GetBytes(text));
    void PrintPieces(IEnumerable<int> ids)
    {
        foreach (int id in ids) stdout.Write(tokenizer.Piece(id));
    }

    if (forkQuestions)
    {
        // The question-agnostic compression serves two questions: the one given and another.
        int[][] questions = { question, encoder.Encode("Who was happy?") };
        if (questions.Any(q => contextLen + 1 + q.Length + steps > c.SeqLen))
            return Fail("--tokens: beyond the context size");
        Print($"config: {sessionText}\n");
        bool forksOk = RunForks(s, questions, Print, PrintPieces);
        Print($"checks: {(forksOk ? "ok" : "FAILED")}\n");
        return forksOk ? 0 : 1;
    }

    var withObserve = Run.Of(s, observe: true);
    var again = Run.Of(s, observe: true);
    var without = Run.Of(s, observe: false);
    string scoringName = kvzip ? "KVzip context reconstruction (H2O over the repeat prompt's queries)"
                               : "question-aware (SnapKV, the question's queries as the window)";
    Print($"scoring: {scoringName}; context {contextLen} tokens, {scoringIds.Length} observed queries per layer, " +
          $"budget {Limits.Budget} tokens\n");
    Print($"config: {sessionText}\n");
    if (!kvzip)
    {
        Print("question:");
        PrintPieces(question);
        Print("\n");
    }
    Print(KeptLine("kept by layer 0 after the first decode step, with observe", withObserve));
    Print(KeptLine("kept without observe", without));
    Print("generated:");
    PrintPieces(withObserve.Generated);
    Print("\n");
    long budgetBytes = (long)c.NumLayers * c.NumKvHeads * Limits.Budget * c.HeadDim * 4 * 2;
    bool differ = !withObserve.Kept.SequenceEqual(without.Kept);
    bool deterministic = withObserve.Generated.SequenceEqual(again.Generated) && withObserve.Kept.SequenceEqual(again.Kept);
    bool within = withObserve.MaxDecodeBytes == budgetBytes && withObserve.Kept.Length == Limits.Budget;
    Print($"bytes held after each decode step: at most {withObserve.MaxDecodeBytes} (budget: {budgetBytes})\n");
    Print($"kept positions differ from the run without observe: {YesNo(differ)}\n");
    Print($"second run identical: {YesNo(deterministic)}\n");
    Print($"bytes held equal the budget: {YesNo(within)}\n");
    bool ok = differ && deterministic && within;
    Print($"checks: {(ok ? "ok" : "FAILED")}\n");
    return ok ? 0 : 1;
}
catch (AttnKitException e)
{
    return Fail($"attnkit failed ({e.Code}): {e.Message}");
}
catch (Exception e) when (e is IOException or InvalidDataException)
{
    return Fail(e.Message);
}

static string YesNo(bool value) => value ? "yes" : "no";

static string KeptLine(string label, Run run) =>
    $"{label} ({run.Kept.Length}):{string.Concat(run.Kept.Select(p => $" {p}"))}\n";

// Compress once, ask several questions (--fork, kvzip scoring). The compressed session is saved and
// forked: the fork answers questions[0], a session loaded from the saved blob questions[1], and each
// answer must equal that of a session that compresses the context again and then reads the question
// (the fork shares the compressed pages copy-on-write; the blob is a full copy).
static bool RunForks(Scenario s, int[][] questions, Action<string> print, Action<IEnumerable<int>> printPieces)
{
    using var source = s.Compressed(out int first);
    byte[] blob = source.Save();
    using var fork = source.Fork();
    using var loaded = Session.FromText(s.SessionText);
    loaded.Load(blob);
    long held = source.BytesHeld, forkedHeld = fork.BytesHeld;
    print($"compressed once: {held} bytes held; saved blob {blob.Length} bytes; fork holds {forkedHeld} bytes\n");
    bool ok = held == forkedHeld;
    Session[] targets = { fork, loaded };
    for (int i = 0; i < 2; ++i)
    {
        int[] got = s.Answer(targets[i], questions[i]);
        int[] want;
        int againFirst;
        using (var again = s.Compressed(out againFirst)) want = s.Answer(again, questions[i]);
        bool same = againFirst == first && got.SequenceEqual(want);
        print(i == 0 ? "fork, question:" : "loaded from the blob, question:");
        printPieces(questions[i]);
        print("\nanswer:");
        printPieces(got);
        print($"\nsame as compressing again: {YesNo(same)}\n");
        ok = ok && same;
    }
    return ok;
}

static class Limits
{
    public const int Budget = 64;  // start 4 + intermediate 44 + recent 16 tokens = 4 pages of 16 per kv head
    public const int PageSize = 16;
    public const int MaxTokens = 1024;
}

/// <summary>The model, the session config and the token ids of one scenario.</summary>
sealed record Scenario(Llama2Model Model, string SessionText, int[] Context, int[] Scoring, int[] Question, int Steps)
{
    public float[] NewLogits() => new float[Model.Config.VocabSize];

    /// <summary>
    /// The context prefilled, scored by the reconstruction prompt's observe pass and evicted down to the
    /// budget by the first decode step (its id in <paramref name="first"/>).
    /// </summary>
    public Session Compressed(out int first)
    {
        var session = Session.FromText(SessionText);
        var logits = NewLogits();
        Model.Forward(session, Context, logits);
        Model.Forward(session, Scoring, Span<float>.Empty, observe: true);
        first = ArgMax(logits);
        Model.Forward(session, new[] { first }, logits);
        return session;
    }

    /// <summary>Reads <paramref name="question"/>, then generates Steps ids greedily.</summary>
    public int[] Answer(Session session, int[] question)
    {
        var logits = NewLogits();
        Model.Forward(session, question, logits);
        var output = new int[Steps];
        for (int step = 0; step < Steps; ++step)
        {
            output[step] = ArgMax(logits);
            Model.Forward(session, output.AsSpan(step, 1), logits);
        }
        return output;
    }

    public static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; ++i)
        {
            if (v[i] > v[best]) best = i;
        }
        return best;
    }
}

/// <summary>
/// One run: its generated ids, the positions layer 0 (kv head 0) keeps after the first decode step,
/// and the most bytes held after any decode step.
/// </summary>
sealed record Run(int[] Generated, long[] Kept, long MaxDecodeBytes)
{
    public static Run Of(Scenario s, bool observe)
    {
        using var session = Session.FromText(s.SessionText);
        var logits = s.NewLogits();
        s.Model.Forward(session, s.Context, logits);
        if (observe) s.Model.Forward(session, s.Scoring, Span<float>.Empty, observe: true);
        if (s.Question.Length > 0) s.Model.Forward(session, s.Question, logits);
        var generated = new int[s.Steps];
        long[] kept = Array.Empty<long>();
        long maxDecodeBytes = 0;
        for (int step = 0; step < s.Steps; ++step)
        {
            generated[step] = Scenario.ArgMax(logits);
            s.Model.Forward(session, generated.AsSpan(step, 1), logits);
            maxDecodeBytes = Math.Max(maxDecodeBytes, session.BytesHeld);
            if (step == 0) kept = session.Positions(0, 0, 0).Take(Limits.MaxTokens).ToArray();
        }
        return new Run(generated, kept, maxDecodeBytes);
    }
}

/// <summary>
/// llama2.c's encoder (sentencepiece BPE), as samples/c/compress_context.c's encode(): a dummy space
/// prefix, one token per UTF-8 character (its bytes + 3 when the character has no piece), then the
/// best-scoring adjacent merge until none is left. Pieces are matched as stored ("&lt;0x0A&gt;").
/// </summary>
sealed class Encoder
{
    private readonly Llama2Tokenizer _tokenizer;
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);

    public Encoder(Llama2Tokenizer tokenizer)
    {
        _tokenizer = tokenizer;
        for (int i = 0; i < tokenizer.VocabSize; ++i) _ids.TryAdd(Key(tokenizer.StoredPiece(i)), i);  // the first id
    }

    // Pieces are bytes; Latin-1 maps each byte to one char, so equal keys are equal bytes.
    private static string Key(ReadOnlySpan<byte> piece) => Encoding.Latin1.GetString(piece);

    public int[] Encode(string text)
    {
        var ids = new List<int>();
        if (text.Length > 0 && _ids.TryGetValue(" ", out int space)) ids.Add(space);
        byte[] raw = Encoding.UTF8.GetBytes(text);
        for (int at = 0; at < raw.Length;)
        {
            int length = 1;
            while (at + length < raw.Length && length < 4 && (raw[at + length] & 0xC0) == 0x80) ++length;
            if (_ids.TryGetValue(Key(raw.AsSpan(at, length)), out int id))
            {
                ids.Add(id);
            }
            else
            {
                for (int i = 0; i < length; ++i) ids.Add(raw[at + i] + 3);
            }
            at += length;
        }
        for (;;)
        {
            float best = -1e10f;
            int bestId = -1, bestAt = -1;
            for (int i = 0; i + 1 < ids.Count; ++i)
            {
                string merged = Key(_tokenizer.StoredPiece(ids[i])) + Key(_tokenizer.StoredPiece(ids[i + 1]));
                if (_ids.TryGetValue(merged, out int id) && _tokenizer.Score(id) > best)
                {
                    best = _tokenizer.Score(id);
                    bestId = id;
                    bestAt = i;
                }
            }
            if (bestAt < 0) return ids.ToArray();
            ids[bestAt] = bestId;
            ids.RemoveAt(bestAt + 1);
        }
    }
}
