// Command generate is the Go sample: samples/c/generate.c's generation loop over stories260k
// (llama2.c format) in Go, every attention call through attnkit.Session.Attend (the model code is
// samples/go/llama2c's).
//
//	generate [--model DIR] [--config FILE] [--tokens N]
//
// DIR holds stories260K.bin, tok512.bin and reference.json (default: $ATTNKIT_MODELS_DIR/stories260k
// or ../shared/models/stories260k beside the source tree). FILE is an attnkit.v1.SessionConfig
// textproto without the model shape, which the sample fills in (default:
// samples/configs/snapkv.textproto). Prints the text, the KV bytes attnkit holds, tokens per second
// and how many generated ids agree with the full-cache greedy run in reference.json: the C sample's
// lines.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/attnkit/attnkit/bindings/go/attnkit"
	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/samples/go/llama2c"
)

// sourceDir is the source tree, set by the build (-ldflags -X main.sourceDir=...).
var sourceDir = "."

func die(what string, err error) {
	fmt.Fprintf(os.Stderr, "generate: %s: %v\n", what, err)
	os.Exit(1)
}

// sessionConfig reads the policies of configPath and adds the model's shape (proto.Merge: the
// shape's scalars win, as the C sample's concatenated binary messages).
func sessionConfig(configPath string, m *llama2c.Model) (*attnkitpb.SessionConfig, error) {
	text, err := os.ReadFile(configPath)
	if err != nil {
		return nil, err
	}
	config := &attnkitpb.SessionConfig{}
	if err := attnkit.ParseConfigText(string(text), config); err != nil {
		return nil, err
	}
	return withModelShape(config, m), nil
}

// withModelShape merges the model's shape into config.
func withModelShape(config *attnkitpb.SessionConfig, m *llama2c.Model) *attnkitpb.SessionConfig {
	proto.Merge(config, &attnkitpb.SessionConfig{
		NumLayers:  int32(m.NumLayers),
		NumHeads:   int32(m.NumHeads),
		NumKvHeads: int32(m.NumKVHeads),
		HeadDim:    int32(m.Dim / m.NumHeads),
		Rope:       &attnkitpb.RopeConfig{Theta: 10000, Interleaved: true},
	})
	return config
}

func defaultModelDir() string {
	if models := os.Getenv("ATTNKIT_MODELS_DIR"); models != "" {
		return filepath.Join(models, "stories260k")
	}
	return filepath.Join(sourceDir, "..", "shared", "models", "stories260k")
}

func main() {
	flags := flag.NewFlagSet("generate", flag.ContinueOnError)
	modelDir := flags.String("model", defaultModelDir(), "folder of stories260K.bin, tok512.bin, reference.json")
	configPath := flags.String("config", filepath.Join(sourceDir, "samples", "configs", "snapkv.textproto"),
		"attnkit.v1.SessionConfig textproto without the model shape")
	steps := flags.Int("tokens", 200, "tokens to generate")
	if err := flags.Parse(os.Args[1:]); err != nil || flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "usage: %s [--model DIR] [--config FILE] [--tokens N]\n", os.Args[0])
		os.Exit(2)
	}
	if *steps <= 0 {
		die("--tokens", fmt.Errorf("expected a positive number"))
	}
	if err := attnkit.CheckABI(); err != nil {
		die("libattnkit", err)
	}

	model, err := llama2c.LoadModel(filepath.Join(*modelDir, "stories260K.bin"))
	if err != nil {
		die("model", err)
	}
	tokenizer, err := llama2c.LoadTokenizer(filepath.Join(*modelDir, "tok512.bin"), model.VocabSize)
	if err != nil {
		die("tokenizer", err)
	}
	referencePath := filepath.Join(*modelDir, "reference.json")
	reference, err := os.ReadFile(referencePath)
	if err != nil {
		die("reference", err)
	}
	prompt := llama2c.ReadIDs(reference, "prompt_ids")
	expected := llama2c.ReadIDs(reference, "greedy_ids_full_cache")
	if len(prompt) == 0 {
		die(referencePath, fmt.Errorf("no prompt_ids"))
	}
	if len(prompt)+*steps > model.SeqLen {
		die("--tokens", fmt.Errorf("prompt + tokens exceed the model's context"))
	}

	config, err := sessionConfig(*configPath, model)
	if err != nil {
		die(*configPath, err)
	}
	session, err := attnkit.NewSession(config)
	if err != nil {
		die(*configPath, err)
	}
	defer session.Close()

	start := time.Now()
	generation, err := model.Generate(session, prompt, *steps)
	if err != nil {
		die("generate", err)
	}
	seconds := time.Since(start).Seconds()

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, id := range prompt[1:] {
		out.Write(tokenizer.Pieces[id])
	}
	for _, id := range generation.IDs {
		out.Write(tokenizer.Pieces[id])
	}
	out.WriteString("\n")

	held, err := session.BytesHeld()
	if err != nil {
		die("bytes_held", err)
	}
	positions, err := session.Positions(0, 0, 0)
	if err != nil {
		die("positions", err)
	}
	compared, agree := 0, 0
	for s := 0; s < *steps && len(prompt)+s < len(expected); s++ {
		compared++
		if generation.IDs[s] == expected[len(prompt)+s] {
			agree++
		}
	}
	fmt.Fprintf(out, "generated %d tokens in %.3f s: %.1f tokens/s\n", *steps, seconds, float64(*steps)/seconds)
	fmt.Fprintf(out, "kv cache: %d bytes held at the end (peak %d), %d tokens per kv head of layer 0\n",
		held, generation.PeakBytes, len(positions))
	fmt.Fprintf(out, "reference: %d of %d generated ids match the full-cache greedy run\n", agree, compared)
}
