// attnkit C# sample: a real generation loop over stories260k whose attention goes through
// AttnKit.Session.Attend; the same scenario and output lines as samples/c/generate.c.
//
//   Generate [--model DIR] [--config FILE] [--tokens N]
//
// DIR holds stories260K.bin, tok512.bin and reference.json (default: $ATTNKIT_MODELS_DIR/stories260k
// or ../shared/models/stories260k beside the source tree). FILE is an attnkit.v1.SessionConfig
// textproto without the model shape, which the sample fills in (default:
// samples/configs/snapkv.textproto).
using System;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.Json;
using AttnKit;
using AttnKit.Proto;
using AttnKit.Samples;

static int Fail(string message)
{
    Console.Error.WriteLine($"Generate: {message}");
    return 1;
}

string sourceDir = SourceTree.Find();
string modelDir = SourceTree.DefaultModelDir();
string configPath = Path.Combine(sourceDir, "samples", "configs", "snapkv.textproto");
int steps = 200;
for (int i = 0; i < args.Length; ++i)
{
    if (i + 1 < args.Length && args[i] == "--model") modelDir = args[++i];
    else if (i + 1 < args.Length && args[i] == "--config") configPath = args[++i];
    else if (i + 1 < args.Length && args[i] == "--tokens")
    {
        if (!int.TryParse(args[++i], out steps) || steps <= 0) return Fail("--tokens: expected a positive number");
    }
    else
    {
        Console.Error.WriteLine("usage: Generate [--model DIR] [--config FILE] [--tokens N]");
        return 2;
    }
}

try
{
    Library.EnsureLoaded();  // the ABI check
    var model = Llama2Model.Load(Path.Combine(modelDir, "stories260K.bin"));
    var c = model.Config;
    var tokenizer = Llama2Tokenizer.Load(Path.Combine(modelDir, "tok512.bin"), c.VocabSize);
    using var reference = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(modelDir, "reference.json")));
    int[] prompt = reference.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
    int[] expected = reference.RootElement.GetProperty("greedy_ids_full_cache").EnumerateArray()
        .Select(e => e.GetInt32()).ToArray();
    if (prompt.Length == 0) return Fail("reference.json: no prompt_ids");
    if (prompt.Length + steps > c.SeqLen) return Fail("--tokens: prompt + tokens exceed the model's context");

    // The session config: the file's policies plus the model's shape.
    SessionConfig config = AttnKit.Config.ParseText<SessionConfig>(File.ReadAllText(configPath));
    config.NumLayers = c.NumLayers;
    config.NumHeads = c.NumHeads;
    config.NumKvHeads = c.NumKvHeads;
    config.HeadDim = c.HeadDim;
    config.Rope = new RopeConfig { Theta = 10000, Interleaved = true };
    using var session = new Session(config);

    var logits = new float[c.VocabSize];
    var generated = new int[steps];
    var clock = Stopwatch.StartNew();
    model.Forward(session, prompt, logits);
    long peak = 0;
    for (int s = 0; s < steps; ++s)
    {
        generated[s] = ArgMax(logits);
        peak = Math.Max(peak, session.BytesHeld);
        if (s + 1 < steps) model.Forward(session, generated.AsSpan(s, 1), logits);
    }
    double seconds = clock.Elapsed.TotalSeconds;

    using (var stdout = Console.OpenStandardOutput())
    {
        stdout.Write(tokenizer.Decode(prompt.AsSpan(1)));
        stdout.Write(tokenizer.Decode(generated));
        stdout.WriteByte((byte)'\n');
    }
    long held = session.BytesHeld;
    long[] positions = session.Positions(0, 0, 0);
    int compared = 0, agree = 0;
    for (int s = 0; s < steps && prompt.Length + s < expected.Length; ++s, ++compared)
    {
        agree += generated[s] == expected[prompt.Length + s] ? 1 : 0;
    }
    var inv = CultureInfo.InvariantCulture;
    Console.WriteLine(string.Format(inv, "generated {0} tokens in {1:F3} s: {2:F1} tokens/s", steps, seconds, steps / seconds));
    Console.WriteLine($"kv cache: {held} bytes held at the end (peak {peak}), {positions.Length} tokens per kv head of layer 0");
    Console.WriteLine($"reference: {agree} of {compared} generated ids match the full-cache greedy run");
    return 0;
}
catch (AttnKitException e)
{
    return Fail($"{configPath}: attnkit error ({e.Code}): {e.Message}");
}
catch (IOException e)
{
    return Fail(e.Message);
}

static int ArgMax(ReadOnlySpan<float> v)
{
    int best = 0;
    for (int i = 1; i < v.Length; ++i)
    {
        if (v[i] > v[best]) best = i;
    }
    return best;
}
