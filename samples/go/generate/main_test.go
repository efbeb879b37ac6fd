package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/attnkit/attnkit/bindings/go/attnkit"
	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/samples/go/llama2c"
)

// modelsDir finds ../shared/models (ATTNKIT_MODELS_DIR, or ATTNKIT_SHARED_DIR/models).
func modelsDir(t *testing.T) string {
	dir := os.Getenv("ATTNKIT_MODELS_DIR")
	if dir == "" && os.Getenv("ATTNKIT_SHARED_DIR") != "" {
		dir = filepath.Join(os.Getenv("ATTNKIT_SHARED_DIR"), "models")
	}
	if dir == "" {
		dir = filepath.Join(sourceDir, "..", "shared", "models")
	}
	if _, err := os.Stat(filepath.Join(dir, "stories260k", "stories260K.bin")); err != nil {
		t.Skipf("no stories260k under %s (../shared/models is absent): skipping the real-model decode loop", dir)
	}
	return filepath.Join(dir, "stories260k")
}

// The decode loop on the real model with the full cache reproduces reference.json's greedy ids for
// 100 tokens, with every attention call through Session.Attend; the cache then holds every token.
func TestDecodeLoopMatchesReference(t *testing.T) {
	dir := modelsDir(t)
	model, err := llama2c.LoadModel(filepath.Join(dir, "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	reference, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	prompt, expected := llama2c.ReadIDs(reference, "prompt_ids"), llama2c.ReadIDs(reference, "greedy_ids_full_cache")
	const steps = 100
	if len(prompt) == 0 || len(expected) < len(prompt)+steps {
		t.Fatalf("reference.json: %d prompt ids, %d greedy ids", len(prompt), len(expected))
	}
	// samples/configs/full_cache.textproto, typed.
	session, err := attnkit.NewSession(withModelShape(&attnkitpb.SessionConfig{PageSize: 16}, model))
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	generation, err := model.Generate(session, prompt, steps)
	if err != nil {
		t.Fatal(err)
	}
	for s, id := range generation.IDs {
		if id != expected[len(prompt)+s] {
			t.Fatalf("token %d: got %d, reference %d (ids so far %v)", s, id, expected[len(prompt)+s], generation.IDs[:s+1])
		}
	}
	positions, err := session.Positions(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Full cache: every prompt token and every generated token but the last (never fed back).
	if want := len(prompt) + steps - 1; len(positions) != want {
		t.Errorf("layer 0 holds %d tokens, want %d", len(positions), want)
	}
}

// The same loop on int8 pages (samples/configs/int8_pages.textproto, typed): keys and values
// quantized per token (groups of head_dim = 8 channels here) with a 16-token float32 window. The
// greedy ids stay the full cache's for at least 95 of 100 tokens, in less than 0.6x the bytes.
func TestDecodeLoopOnInt8Pages(t *testing.T) {
	dir := modelsDir(t)
	model, err := llama2c.LoadModel(filepath.Join(dir, "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	reference, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	prompt, expected := llama2c.ReadIDs(reference, "prompt_ids"), llama2c.ReadIDs(reference, "greedy_ids_full_cache")
	const steps = 100
	if len(prompt) == 0 || len(expected) < len(prompt)+steps {
		t.Fatalf("reference.json: %d prompt ids, %d greedy ids", len(prompt), len(expected))
	}
	held := map[bool]int64{}
	for _, int8Pages := range []bool{false, true} {
		config := &attnkitpb.SessionConfig{PageSize: 16}
		if int8Pages {
			config.KvFormat = &attnkitpb.KvFormat{Keys: attnkitpb.KvDataType_INT8,
				Values: attnkitpb.KvDataType_INT8, ResidualTokens: 16}
		}
		session, err := attnkit.NewSession(withModelShape(config, model))
		if err != nil {
			t.Fatal(err)
		}
		generation, err := model.Generate(session, prompt, steps)
		if err != nil {
			session.Close()
			t.Fatal(err)
		}
		if held[int8Pages], err = session.BytesHeld(); err != nil {
			session.Close()
			t.Fatal(err)
		}
		session.Close()
		if !int8Pages {
			continue
		}
		agree := 0
		for s, id := range generation.IDs {
			if id == expected[len(prompt)+s] {
				agree++
			}
		}
		if agree < 95 {
			t.Errorf("int8 pages: %d of %d greedy ids equal the full cache's, want at least 95", agree, steps)
		}
	}
	if float64(held[true]) >= 0.6*float64(held[false]) {
		t.Errorf("int8 pages hold %d bytes, the full cache %d: want less than 0.6x", held[true], held[false])
	}
}
