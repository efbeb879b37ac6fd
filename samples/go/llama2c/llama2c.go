// Package llama2c is the model code the Go samples share (samples/go/generate,
// samples/go/compress_context), as samples/c/llama2c.h is the C samples': the llama2.c checkpoint
// and tokenizer readers, reference.json's id arrays, the float32 math of the stories260k forward
// pass with every attention call through an attnkit.Session, and greedy generation.
//
// The float32 arithmetic follows samples/c/llama2c.h operation for operation, with libm's expf,
// powf, cosf and sinf (libm.go), so the Go and C samples compute the same bits.
package llama2c

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"

	"github.com/attnkit/attnkit/bindings/go/attnkit"
)

// Config is the llama2.c header.
type Config struct {
	Dim, HiddenDim, NumLayers, NumHeads, NumKVHeads, VocabSize, SeqLen int
}

// Weights are views into one float32 array, in the llama2.c legacy order.
type Weights struct {
	TokenEmbedding, RMSAtt, WQ, WK, WV, WO, RMSFFN, W1, W2, W3, RMSFinal []float32
}

// Model is stories260k: its shape and weights.
type Model struct {
	Config
	Weights
	ropeFreq []float32 // RoPE's frequency of each offset within a head
}

// LoadModel reads a llama2.c legacy .bin checkpoint.
func LoadModel(path string) (*Model, error) {
	bytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(bytes) < 28 {
		return nil, fmt.Errorf("%s: too short for a llama2.c header", path)
	}
	header := make([]int, 7)
	for i := range header {
		header[i] = int(int32(binary.LittleEndian.Uint32(bytes[4*i:])))
	}
	vocab := header[5]
	if vocab < 0 {
		vocab = -vocab
	}
	c := Config{Dim: header[0], HiddenDim: header[1], NumLayers: header[2], NumHeads: header[3],
		NumKVHeads: header[4], VocabSize: vocab, SeqLen: header[6]}
	head := c.Dim / c.NumHeads
	kvDim := head * c.NumKVHeads
	L, D, H := c.NumLayers, c.Dim, c.HiddenDim
	floats := c.VocabSize*D + L*D + L*D*D + 2*L*kvDim*D + L*D*D + L*D + 3*L*D*H + D
	if len(bytes) < 28+4*floats {
		return nil, fmt.Errorf("%s: truncated weights", path)
	}
	data := make([]float32, floats)
	for i := range data {
		data[i] = math.Float32frombits(binary.LittleEndian.Uint32(bytes[28+4*i:]))
	}
	take := func(n int) []float32 {
		part := data[:n:n]
		data = data[n:]
		return part
	}
	m := &Model{Config: c, ropeFreq: ropeFrequencies(head)}
	m.TokenEmbedding = take(c.VocabSize * D)
	m.RMSAtt = take(L * D)
	m.WQ = take(L * D * D)
	m.WK = take(L * kvDim * D)
	m.WV = take(L * kvDim * D)
	m.WO = take(L * D * D)
	m.RMSFFN = take(L * D)
	m.W1 = take(L * H * D)
	m.W2 = take(L * D * H)
	m.W3 = take(L * H * D)
	m.RMSFinal = take(D)
	return m, nil
}

// Tokenizer is tok512.bin: every token's piece as stored (byte tokens as "<0xHH>") with its merge
// score, and as printed.
type Tokenizer struct {
	// Stored are the pieces as tok512.bin stores them, which the encoder matches.
	Stored [][]byte
	// Scores are the merge scores of the pieces.
	Scores []float32
	// Pieces are the pieces as printed: a byte token's byte (llama2.c's decode).
	Pieces [][]byte
}

// LoadTokenizer reads tok512.bin: the pieces and scores of vocabSize tokens.
func LoadTokenizer(path string, vocabSize int) (*Tokenizer, error) {
	bytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{Stored: make([][]byte, vocabSize), Scores: make([]float32, vocabSize),
		Pieces: make([][]byte, vocabSize)}
	at := 4
	for i := range t.Pieces {
		if at+8 > len(bytes) {
			return nil, fmt.Errorf("%s: truncated vocabulary", path)
		}
		t.Scores[i] = math.Float32frombits(binary.LittleEndian.Uint32(bytes[at:]))
		length := int(int32(binary.LittleEndian.Uint32(bytes[at+4:])))
		at += 8
		if length < 0 || at+length > len(bytes) {
			return nil, fmt.Errorf("%s: bad piece length", path)
		}
		t.Stored[i] = bytes[at : at+length : at+length]
		t.Pieces[i] = bytePiece(t.Stored[i])
		at += length
	}
	return t, nil
}

// ReadIDs reads the integer array key of reference.json.
func ReadIDs(json []byte, key string) []int {
	match := regexp.MustCompile(`"` + regexp.QuoteMeta(key) + `"\s*:\s*\[([^\]]*)\]`).FindSubmatch(json)
	if match == nil {
		return nil
	}
	var ids []int
	for _, field := range regexp.MustCompile(`-?\d+`).FindAll(match[1], -1) {
		id, _ := strconv.Atoi(string(field))
		ids = append(ids, id)
	}
	return ids
}

// The float32 arithmetic below follows samples/c/llama2c.h operation for operation: sums in the same
// order and precision, and libm's expf, powf, cosf and sinf where the C sample calls them (the
// float64 functions rounded to float32 differ from glibc's for about 1 % of RoPE angles and near
// float32 rounding midpoints of expf), so the Go and C samples compute the same bits.

func rmsnorm(out, x, weight []float32) {
	ss := 0.0
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	// sqrtf is correctly rounded, as is the float64 square root of a float32 rounded to float32.
	scale := 1 / float32(math.Sqrt(float64(float32(ss/float64(len(x)))+1e-5)))
	for i := range out {
		out[i] = weight[i] * (scale * x[i])
	}
}

// matvec: out[rows] = w[rows][cols] x[cols].
func matvec(out, x, w []float32, rows, cols int) {
	for r := 0; r < rows; r++ {
		var acc float32
		wr := w[r*cols : (r+1)*cols]
		for c, v := range wr {
			acc += v * x[c]
		}
		out[r] = acc
	}
}

// ropeFrequencies returns the RoPE frequency of every offset within a head, as rope() computes
// it: 1.0f / powf(10000.0f, (float)(i % head) / (float)head).
func ropeFrequencies(head int) []float32 {
	freq := make([]float32, head)
	for r := range freq {
		freq[r] = 1 / powf(10000, float32(r)/float32(head))
	}
	return freq
}

// ropeTable returns cosf and sinf of (float)pos * freq for the positions first, first+1, ...,
// first+tokens-1 (row t, column i % head).
func (m *Model) ropeTable(first int64, tokens int) (cos, sin []float32) {
	head := len(m.ropeFreq)
	angles := make([]float32, tokens*head)
	for t := 0; t < tokens; t++ {
		for r, freq := range m.ropeFreq {
			angles[t*head+r] = float32(first+int64(t)) * freq
		}
	}
	cos, sin = make([]float32, len(angles)), make([]float32, len(angles))
	cosSinf(angles, cos, sin)
	return cos, sin
}

// rope rotates interleaved pairs (x[2i], x[2i+1]) of each head by the angles of one position (cos
// and sin: a row of ropeTable).
func rope(x, cos, sin []float32) {
	head := len(cos)
	for i := 0; i < len(x); i += 2 {
		c, s := cos[i%head], sin[i%head]
		a, b := x[i], x[i+1]
		x[i] = a*c - b*s
		x[i+1] = a*s + b*c
	}
}

// view is a [1, heads, tokens, headDim] tensor over a [tokens, heads, headDim] buffer: strides,
// not copies.
func view(data []float32, tokens, heads, headDim int) *attnkit.Float32Tensor {
	return attnkit.NewTensor(data, 1, int64(heads), int64(tokens), int64(headDim)).
		WithStrides(int64(tokens*heads*headDim), int64(headDim), int64(heads*headDim), 1)
}

// Forward runs tokens through every layer, each layer's attention an Attend call of session (which
// appends their keys and values to the cache), and writes the logits of the last token when logits
// is not nil.
func (m *Model) Forward(session *attnkit.Session, ids []int, logits []float32) error {
	return m.forward(session, ids, false, logits)
}

// Observe runs tokens through every layer with each layer's attention an Observe call of session:
// their queries (at the positions after the sequence) score the cache, which does not grow; no keys
// or values are computed and no logits are written.
func (m *Model) Observe(session *attnkit.Session, ids []int) error {
	return m.forward(session, ids, true, nil)
}

func (m *Model) forward(session *attnkit.Session, ids []int, observe bool, logits []float32) error {
	D, head, H, tokens := m.Dim, m.Dim/m.NumHeads, m.HiddenDim, len(ids)
	kvDim := head * m.NumKVHeads
	x := make([]float32, tokens*D)
	xb := make([]float32, D)
	q := make([]float32, tokens*D)
	k := make([]float32, tokens*kvDim)
	v := make([]float32, tokens*kvDim)
	att := make([]float32, tokens*D)
	tmp := make([]float32, D)
	h1 := make([]float32, H)
	h3 := make([]float32, H)
	e := make([]float32, H)
	firstPosition, err := session.NextPosition(0)
	if err != nil {
		return err
	}
	cos, sin := m.ropeTable(firstPosition, tokens)
	for t, id := range ids {
		copy(x[t*D:(t+1)*D], m.TokenEmbedding[id*D:(id+1)*D])
	}
	for l := 0; l < m.NumLayers; l++ {
		for t := 0; t < tokens; t++ {
			cosT, sinT := cos[t*head:(t+1)*head], sin[t*head:(t+1)*head]
			rmsnorm(xb, x[t*D:(t+1)*D], m.RMSAtt[l*D:(l+1)*D])
			matvec(q[t*D:(t+1)*D], xb, m.WQ[l*D*D:], D, D)
			rope(q[t*D:(t+1)*D], cosT, sinT)
			if observe {
				continue
			}
			matvec(k[t*kvDim:(t+1)*kvDim], xb, m.WK[l*kvDim*D:], kvDim, D)
			matvec(v[t*kvDim:(t+1)*kvDim], xb, m.WV[l*kvDim*D:], kvDim, D)
			rope(k[t*kvDim:(t+1)*kvDim], cosT, sinT)
		}
		if observe {
			err = session.Observe(l, view(q, tokens, m.NumHeads, head), view(att, tokens, m.NumHeads, head))
		} else {
			err = session.Attend(l, view(q, tokens, m.NumHeads, head), view(k, tokens, m.NumKVHeads, head),
				view(v, tokens, m.NumKVHeads, head), view(att, tokens, m.NumHeads, head))
		}
		if err != nil {
			return err
		}
		for t := 0; t < tokens; t++ {
			xt := x[t*D : (t+1)*D]
			matvec(tmp, att[t*D:(t+1)*D], m.WO[l*D*D:], D, D)
			for i := range xt {
				xt[i] += tmp[i]
			}
			rmsnorm(xb, xt, m.RMSFFN[l*D:(l+1)*D])
			matvec(h1, xb, m.W1[l*H*D:], H, D)
			matvec(h3, xb, m.W3[l*H*D:], H, D)
			for i, h := range h1 {
				e[i] = -h
			}
			expf(e)
			for i := range h1 {
				h1[i] = h1[i] / (1 + e[i]) * h3[i]
			}
			matvec(tmp, h1, m.W2[l*D*H:], D, H)
			for i := range xt {
				xt[i] += tmp[i]
			}
		}
	}
	if logits != nil {
		rmsnorm(xb, x[(tokens-1)*D:], m.RMSFinal)
		matvec(logits, xb, m.TokenEmbedding, m.VocabSize, D)
	}
	return nil
}

// Argmax returns the index of the largest value (the first of equals), greedy decoding's token.
func Argmax(values []float32) int {
	best := 0
	for i, v := range values {
		if v > values[best] {
			best = i
		}
	}
	return best
}

// Generation is the result of a greedy run.
type Generation struct {
	IDs       []int
	PeakBytes int64
}

// Generate runs the prompt, then steps greedy tokens.
func (m *Model) Generate(session *attnkit.Session, prompt []int, steps int) (*Generation, error) {
	logits := make([]float32, m.VocabSize)
	if err := m.Forward(session, prompt, logits); err != nil {
		return nil, err
	}
	g := &Generation{IDs: make([]int, steps)}
	for s := 0; s < steps; s++ {
		g.IDs[s] = Argmax(logits)
		held, err := session.BytesHeld()
		if err != nil {
			return nil, err
		}
		if held > g.PeakBytes {
			g.PeakBytes = held
		}
		if s+1 < steps {
			if err := m.Forward(session, g.IDs[s:s+1], logits); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

// bytePiece maps a byte-fallback piece "<0xHH>" to the byte 0xHH (a newline is <0x0A>), as
// llama2.c's decode does; a NUL byte prints nothing. Other pieces are returned unchanged.
func bytePiece(piece []byte) []byte {
	if len(piece) != 6 || string(piece[:3]) != "<0x" || piece[5] != '>' {
		return piece
	}
	value, err := strconv.ParseUint(string(piece[3:5]), 16, 8)
	if err != nil {
		return piece
	}
	if value == 0 {
		return []byte{}
	}
	return []byte{byte(value)}
}
