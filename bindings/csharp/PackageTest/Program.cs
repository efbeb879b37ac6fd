// Consumes the AttnKit package: the ABI check, a config round trip and one attention call through
// the native libraries the package carries (runtimes/linux-x64/native).
using System;
using System.Linq;
using AttnKit;
using AttnKit.Proto;

Library.EnsureLoaded();
var config = new SessionConfig { NumLayers = 1, NumHeads = 2, NumKvHeads = 1, HeadDim = 4 };
var parsed = Config.ParseText<SessionConfig>(Config.ToText(config));
if (!parsed.Equals(config)) throw new Exception("config round trip changed the message");
using var session = new Session(config);
// One token: attention over itself returns v for every head.
float[] q = { 1, 0, 0, 0, 0, 1, 0, 0 }, k = { 1, 1, 1, 1 }, v = { 0.5f, -1, 2, 3 };
var output = new float[8];
session.Attend(0, new TensorView(q, 1, 2, 1, 4), new TensorView(k, 1, 1, 1, 4), new TensorView(v, 1, 1, 1, 4),
               new TensorView(output, 1, 2, 1, 4));
if (!output.SequenceEqual(v.Concat(v))) throw new Exception($"unexpected output {string.Join(", ", output)}");
try
{
    Session.FromText("num_layers: 1 num_heads: 2 num_kv_heads: 3 head_dim: 4");
    throw new Exception("an invalid config was accepted");
}
catch (AttnKitException e) when (e.Code == StatusCode.InvalidArgument)
{
}
Console.WriteLine($"AttnKit package OK: libattnkit {Library.Version} (ABI {Library.AbiVersion}), " +
                  $"{session.BytesHeld} bytes held");
