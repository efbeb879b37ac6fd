// Command compress_context is samples/c/compress_context.c in Go: a context is compressed once with
// queries that are not part of it (attnkit.Session.Observe), then the answer is generated from the
// compressed cache (stories260k, llama2.c format, the model code of samples/go/llama2c).
//
//	compress_context --scoring question|kvzip [--model DIR] [--context N] [--tokens N]
//	                 [--question TEXT] [--fork]
//
// question: question-aware compression (SnapKV, the question's queries as its window); kvzip:
// KVzip-style scoring by a "repeat the context" prompt (H2O over its queries). Each scoring runs
// three sessions: with the observe pass, the same again (identical output) and without it (other
// kept positions). --fork (kvzip): compress once, answer two questions from Session.Fork and from a
// session that loads Save's blob; each answer must equal that of compressing again. Ends with
// "checks: ok" when every check holds (exit status 1 otherwise). The options, checks and printed
// lines are the C sample's, byte for byte (llama2c computes the C sample's float32 bits).
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/attnkit/attnkit/bindings/go/attnkit"
	"github.com/attnkit/attnkit/samples/go/llama2c"
)

// sourceDir is the source tree, set by the build (-ldflags -X main.sourceDir=...).
var sourceDir = "."

// The eviction budget: start 4 + intermediate 44 + recent 16 tokens = 4 pages of 16 per kv head.
const (
	budget    = 64
	pageSize  = 16
	maxTokens = 1024
)

// stdout buffers the printed lines; die flushes it, as C's exit() flushes stdio.
var stdout = bufio.NewWriter(os.Stdout)

func die(what string, err error) {
	stdout.Flush()
	fmt.Fprintf(os.Stderr, "compress_context: %s: %v\n", what, err)
	os.Exit(1)
}

// check exits with the error of an attnkit call.
func check(err error, what string) {
	if err != nil {
		die(what+" failed", err)
	}
}

// encoder is llama2.c's encoder (sentencepiece BPE) over tok512.bin's stored pieces, as the C
// sample's encode().
type encoder struct {
	tok *llama2c.Tokenizer
	ids map[string]int // the first id of each stored piece, as lookup()
}

func newEncoder(tok *llama2c.Tokenizer) *encoder {
	e := &encoder{tok: tok, ids: make(map[string]int, len(tok.Stored))}
	for i, piece := range tok.Stored {
		// lookup() compares C strings: a piece is matched up to its first NUL byte.
		if at := bytes.IndexByte(piece, 0); at >= 0 {
			piece = piece[:at]
		}
		if _, seen := e.ids[string(piece)]; !seen {
			e.ids[string(piece)] = i
		}
	}
	return e
}

func (e *encoder) lookup(piece string) int {
	if id, ok := e.ids[piece]; ok {
		return id
	}
	return -1
}

// encode: a dummy space prefix, one token per UTF-8 character (its bytes + 3 when the character
// has no piece), then the best-scoring adjacent merge until none is left. At most limit ids.
func (e *encoder) encode(text string, limit int) []int {
	// The C sample reads text as a C string: up to its first NUL byte.
	if at := strings.IndexByte(text, 0); at >= 0 {
		text = text[:at]
	}
	var ids []int
	space := e.lookup(" ")
	if text != "" && space >= 0 && len(ids) < limit {
		ids = append(ids, space)
	}
	for p := 0; p < len(text) && len(ids) < limit; {
		n := 1
		for n < 4 && p+n < len(text) && text[p+n]&0xC0 == 0x80 {
			n++
		}
		if id := e.lookup(text[p : p+n]); id >= 0 {
			ids = append(ids, id)
		} else {
			for i := 0; i < n && len(ids) < limit; i++ {
				ids = append(ids, int(text[p+i])+3)
			}
		}
		p += n
	}
	for {
		best := float32(-1e10)
		bestID, bestAt := -1, -1
		for i := 0; i+1 < len(ids); i++ {
			id := e.lookup(cString(e.tok.Stored[ids[i]]) + cString(e.tok.Stored[ids[i+1]]))
			if id >= 0 && e.tok.Scores[id] > best {
				best, bestID, bestAt = e.tok.Scores[id], id, i
			}
		}
		if bestAt < 0 {
			return ids
		}
		ids[bestAt] = bestID
		ids = append(ids[:bestAt+1], ids[bestAt+2:]...)
	}
}

// cString is piece up to its first NUL byte, as C's %s prints it.
func cString(piece []byte) string {
	if at := bytes.IndexByte(piece, 0); at >= 0 {
		piece = piece[:at]
	}
	return string(piece)
}

// scenario is the model, the session config and the token ids of one scenario.
type scenario struct {
	model                      *llama2c.Model
	sessionText                string
	context, scoring, question []int
	steps                      int
}

func (s *scenario) newSession() *attnkit.Session {
	session, err := attnkit.NewSessionFromText(s.sessionText)
	check(err, "session")
	return session
}

// forward runs ids through the model (attend calls), writing the last token's logits when logits
// is not nil.
func (s *scenario) forward(session *attnkit.Session, ids []int, logits []float32) {
	check(s.model.Forward(session, ids, logits), "attend")
}

// observe runs ids through the model with every layer's attention an observe call.
func (s *scenario) observe(session *attnkit.Session, ids []int) {
	check(s.model.Observe(session, ids), "observe")
}

// run is one run: its generated ids, the positions layer 0 (kv head 0) keeps after the first decode
// step, and the most bytes held after any decode step.
type run struct {
	generated      []int
	kept           []int64
	maxDecodeBytes int64
}

func newRun(s *scenario, observe bool) *run {
	r := &run{generated: make([]int, s.steps)}
	session := s.newSession()
	defer session.Close()
	logits := make([]float32, s.model.VocabSize)
	s.forward(session, s.context, logits)
	if observe {
		s.observe(session, s.scoring)
	}
	if len(s.question) > 0 {
		s.forward(session, s.question, logits)
	}
	for step := 0; step < s.steps; step++ {
		r.generated[step] = llama2c.Argmax(logits)
		s.forward(session, r.generated[step:step+1], logits)
		held, err := session.BytesHeld()
		check(err, "bytes_held")
		if held > r.maxDecodeBytes {
			r.maxDecodeBytes = held
		}
		if step == 0 {
			positions, err := session.Positions(0, 0, 0)
			check(err, "positions")
			if len(positions) > maxTokens {
				positions = positions[:maxTokens]
			}
			r.kept = positions
		}
	}
	return r
}

// compressed compresses once (--fork, kvzip scoring): the context is prefilled, scored by the
// reconstruction prompt's observe pass and evicted down to the budget by the first decode step.
// Returns the session and the id that step decoded.
func compressed(s *scenario) (*attnkit.Session, int) {
	session := s.newSession()
	logits := make([]float32, s.model.VocabSize)
	s.forward(session, s.context, logits)
	s.observe(session, s.scoring)
	first := llama2c.Argmax(logits)
	s.forward(session, []int{first}, logits) // evicts down to the budget
	return session, first
}

func answer(s *scenario, session *attnkit.Session, question []int) []int {
	logits := make([]float32, s.model.VocabSize)
	s.forward(session, question, logits)
	out := make([]int, s.steps)
	for step := range out {
		out[step] = llama2c.Argmax(logits)
		s.forward(session, out[step:step+1], logits)
	}
	return out
}

// runForks saves and forks the compressed session: the fork answers questions[0], a session loaded
// from the saved blob questions[1], and each answer must equal that of a session that compresses
// the context again and then reads the question (the fork shares the compressed pages
// copy-on-write; the blob is a full copy).
func runForks(s *scenario, pieces [][]byte, questions [2][]int, out *bufio.Writer) bool {
	source, first := compressed(s)
	defer source.Close()
	blob, err := source.Save()
	check(err, "save")
	fork, err := source.Fork()
	check(err, "fork")
	defer fork.Close()
	loaded := s.newSession()
	defer loaded.Close()
	check(loaded.Load(blob), "load")
	held, err := source.BytesHeld()
	check(err, "bytes_held")
	forkedHeld, err := fork.BytesHeld()
	check(err, "bytes_held")
	fmt.Fprintf(out, "compressed once: %d bytes held; saved blob %d bytes; fork holds %d bytes\n",
		held, len(blob), forkedHeld)
	ok := held == forkedHeld
	targets := [2]*attnkit.Session{fork, loaded}
	labels := [2]string{"fork", "loaded from the blob"}
	for i, target := range targets {
		got := answer(s, target, questions[i])
		again, againFirst := compressed(s)
		want := answer(s, again, questions[i])
		again.Close()
		same := againFirst == first && equal(got, want)
		fmt.Fprintf(out, "%s, question:", labels[i])
		writePieces(out, pieces, questions[i])
		out.WriteString("\nanswer:")
		writePieces(out, pieces, got)
		fmt.Fprintf(out, "\nsame as compressing again: %s\n", yesNo(same))
		ok = ok && same
	}
	return ok
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func writePieces(out *bufio.Writer, pieces [][]byte, ids []int) {
	for _, id := range ids {
		out.Write(pieces[id])
	}
}

func writeKept(out *bufio.Writer, label string, r *run) {
	fmt.Fprintf(out, "%s (%d):", label, len(r.kept))
	for _, position := range r.kept {
		fmt.Fprintf(out, " %d", position)
	}
	out.WriteString("\n")
}

func yesNo(value bool) string {
	if value {
		return "yes"
	}
	return "no"
}

// atoi is C's atoi: optional leading white space and sign, then the digits that follow (0 when
// there are none).
func atoi(text string) int {
	text = strings.TrimLeft(text, " \t\n\v\f\r")
	negative := false
	if text != "" && (text[0] == '-' || text[0] == '+') {
		negative = text[0] == '-'
		text = text[1:]
	}
	value := 0
	for i := 0; i < len(text) && text[i] >= '0' && text[i] <= '9' && value <= 1<<31; i++ {
		value = value*10 + int(text[i]-'0')
	}
	if negative {
		return -value
	}
	return value
}

func main() {
	os.Exit(compressContext(os.Args))
}

func compressContext(args []string) int {
	modelDir := filepath.Join(sourceDir, "..", "shared", "models", "stories260k")
	if models := os.Getenv("ATTNKIT_MODELS_DIR"); models != "" {
		modelDir = filepath.Join(models, "stories260k")
	}
	scoring, haveScoring := "", false
	questionText := "Where did the little girl go?"
	contextLen, steps, forkQuestions := 160, 40, false
	for i := 1; i < len(args); i++ {
		hasValue := i+1 < len(args)
		switch {
		case hasValue && args[i] == "--scoring":
			i++
			scoring, haveScoring = args[i], true
		case hasValue && args[i] == "--model":
			i++
			modelDir = args[i]
		case hasValue && args[i] == "--context":
			i++
			contextLen = atoi(args[i])
		case hasValue && args[i] == "--tokens":
			i++
			steps = atoi(args[i])
		case hasValue && args[i] == "--question":
			i++
			questionText = args[i]
		case args[i] == "--fork":
			forkQuestions = true
		default:
			haveScoring = false
			i = len(args)
		}
	}
	kvzip := haveScoring && scoring == "kvzip"
	if !haveScoring || (!kvzip && scoring != "question") || steps <= 0 || steps > maxTokens ||
		contextLen <= budget || (forkQuestions && !kvzip) {
		fmt.Fprintf(os.Stderr, "usage: %s --scoring question|kvzip [--model DIR] [--context N > %d] [--tokens N] "+
			"[--question TEXT] [--fork (kvzip only)]\n", args[0], budget)
		return 2
	}
	if err := attnkit.CheckABI(); err != nil {
		die("libattnkit", err)
	}

	model, err := llama2c.LoadModel(filepath.Join(modelDir, "stories260K.bin"))
	if err != nil {
		die("model", err)
	}
	tok, err := llama2c.LoadTokenizer(filepath.Join(modelDir, "tok512.bin"), model.VocabSize)
	if err != nil {
		die("tokenizer", err)
	}
	reference, err := os.ReadFile(filepath.Join(modelDir, "reference.json"))
	if err != nil {
		die("reference", err)
	}
	available := llama2c.ReadIDs(reference, "greedy_ids_full_cache")
	if len(available) > maxTokens {
		available = available[:maxTokens]
	}
	if len(available) < contextLen {
		die("--context", fmt.Errorf("longer than reference.json's greedy text"))
	}
	context := available[:contextLen:contextLen]
	enc := newEncoder(tok)

	s := &scenario{model: model, context: context, steps: steps}
	question := enc.encode(questionText, maxTokens)
	if kvzip {
		// KVzip's reconstruction prompt: the instruction, then the context again (without its BOS).
		s.scoring = append(enc.encode("Repeat the story:", maxTokens), context[1:]...)
	} else {
		s.question = question
		s.scoring = question
	}
	if contextLen+len(s.question)+steps > model.SeqLen {
		die("--tokens", fmt.Errorf("beyond the context size"))
	}
	algorithm := "algorithm: SNAPKV window_size: 16"
	if kvzip {
		algorithm = "algorithm: H2O"
	}
	s.sessionText = fmt.Sprintf("num_layers: %d num_heads: %d num_kv_heads: %d head_dim: %d page_size: %d "+
		"rope { theta: 10000 interleaved: true } "+
		"eviction { enabled: true granularity: PER_TOKEN start_tokens: 4 "+
		"intermediate_tokens: %d recent_tokens: 16 defer_eviction_to_decode: true %s }",
		model.NumLayers, model.NumHeads, model.NumKVHeads, model.Dim/model.NumHeads, pageSize, budget-20,
		algorithm)

	out := stdout
	defer out.Flush()
	if forkQuestions {
		// The question-agnostic compression serves two questions: the one given and another.
		questions := [2][]int{question, enc.encode("Who was happy?", maxTokens)}
		for _, q := range questions {
			if contextLen+1+len(q)+steps > model.SeqLen {
				die("--tokens", fmt.Errorf("beyond the context size"))
			}
		}
		fmt.Fprintf(out, "config: %s\n", s.sessionText)
		ok := runForks(s, tok.Pieces, questions, out)
		fmt.Fprintf(out, "checks: %s\n", okFailed(ok))
		return exitStatus(ok)
	}

	withObserve, again, without := newRun(s, true), newRun(s, true), newRun(s, false)
	description := "question-aware (SnapKV, the question's queries as the window)"
	if kvzip {
		description = "KVzip context reconstruction (H2O over the repeat prompt's queries)"
	}
	fmt.Fprintf(out, "scoring: %s; context %d tokens, %d observed queries per layer, budget %d tokens\n",
		description, contextLen, len(s.scoring), budget)
	fmt.Fprintf(out, "config: %s\n", s.sessionText)
	if !kvzip {
		out.WriteString("question:")
		writePieces(out, tok.Pieces, question)
		out.WriteString("\n")
	}
	writeKept(out, "kept by layer 0 after the first decode step, with observe", withObserve)
	writeKept(out, "kept without observe", without)
	out.WriteString("generated:")
	writePieces(out, tok.Pieces, withObserve.generated)
	out.WriteString("\n")
	headDim := int64(model.Dim / model.NumHeads)
	budgetBytes := int64(model.NumLayers) * int64(model.NumKVHeads) * budget * headDim * 4 * 2
	differ := !equal(withObserve.kept, without.kept)
	deterministic := equal(withObserve.generated, again.generated) && equal(withObserve.kept, again.kept)
	within := withObserve.maxDecodeBytes == budgetBytes && len(withObserve.kept) == budget
	fmt.Fprintf(out, "bytes held after each decode step: at most %d (budget: %d)\n",
		withObserve.maxDecodeBytes, budgetBytes)
	fmt.Fprintf(out, "kept positions differ from the run without observe: %s\n", yesNo(differ))
	fmt.Fprintf(out, "second run identical: %s\n", yesNo(deterministic))
	fmt.Fprintf(out, "bytes held equal the budget: %s\n", yesNo(within))
	ok := differ && deterministic && within
	fmt.Fprintf(out, "checks: %s\n", okFailed(ok))
	return exitStatus(ok)
}

func okFailed(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}

func exitStatus(ok bool) int {
	if ok {
		return 0
	}
	return 1
}
