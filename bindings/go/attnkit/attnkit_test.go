package attnkit

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
)

// A small model shape: 2 layers, 4 query heads over 2 kv heads of dim 8.
func smallConfig() *attnkitpb.SessionConfig {
	return &attnkitpb.SessionConfig{NumLayers: 2, NumHeads: 4, NumKvHeads: 2, HeadDim: 8, PageSize: 16}
}

func snapKV() *attnkitpb.EvictionConfig {
	return &attnkitpb.EvictionConfig{Enabled: true, Algorithm: attnkitpb.EvictionAlgorithm_SNAPKV, Granularity: attnkitpb.Granularity_PER_TOKEN,
		StartTokens: 2, RecentTokens: 4, IntermediateTokens: 4, WindowSize: 2}
}

// asError asserts err is an *Error with code.
func asError(t *testing.T, err error, code Code) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want an *attnkit.Error with %v, got %T %v", code, err, err)
	}
	if e.Code != code {
		t.Fatalf("want code %v, got %v (%s)", code, e.Code, e.Message)
	}
	return e
}

// filled returns n deterministic values.
func filled(n int, seed float32) []float32 {
	data := make([]float32, n)
	for i := range data {
		data[i] = float32((i*37+int(seed*101))%17)/17 - 0.5
	}
	return data
}

// attend runs one attend call of tokens new tokens on layer and returns out.
func attend(s *Session, layer, tokens int, seed float32) ([]float32, error) {
	q := NewTensor(filled(4*tokens*8, seed), 1, 4, int64(tokens), 8)
	k := NewTensor(filled(2*tokens*8, seed+1), 1, 2, int64(tokens), 8)
	v := NewTensor(filled(2*tokens*8, seed+2), 1, 2, int64(tokens), 8)
	out := NewTensor(make([]float32, 4*tokens*8), 1, 4, int64(tokens), 8)
	err := s.Attend(layer, q, k, v, out)
	return out.Data, err
}

func TestAbiMatchesHeader(t *testing.T) {
	if err := CheckABI(); err != nil {
		t.Fatal(err)
	}
	if ABIVersion() != HeaderABIVersion {
		t.Fatalf("library ABI %d, header %d", ABIVersion(), HeaderABIVersion)
	}
	if Version() == "" {
		t.Fatal("empty version string")
	}
}

func TestNumThreadsIsSetReadBackAndValidated(t *testing.T) {
	if NumThreads() != 0 {
		t.Fatalf("default NumThreads %d, want 0", NumThreads())
	}
	defer SetNumThreads(0)
	if err := SetNumThreads(1); err != nil {
		t.Fatal(err)
	}
	if NumThreads() != 1 {
		t.Fatalf("NumThreads %d after SetNumThreads(1)", NumThreads())
	}
	s, err := NewSessionFromText("num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := attend(s, 0, 3, 1); err != nil {
		t.Fatal(err)
	}
	e := asError(t, SetNumThreads(-1), InvalidArgument)
	if !strings.Contains(e.Message, "num_threads") {
		t.Fatalf("message %q does not name num_threads", e.Message)
	}
	asError(t, SetNumThreads(1<<40), InvalidArgument)
	if NumThreads() != 1 {
		t.Fatalf("a rejected value changed NumThreads to %d", NumThreads())
	}
}

func TestAbiMismatchIsAnError(t *testing.T) {
	e := asError(t, checkABI(HeaderABIVersion+1, HeaderABIVersion), FailedPrecondition)
	if !strings.Contains(e.Message, "ABI version") {
		t.Fatalf("message %q does not mention the ABI version", e.Message)
	}
}

func TestConfigRoundTrip(t *testing.T) {
	config := smallConfig()
	config.Eviction = snapKV()
	config.Rope = &attnkitpb.RopeConfig{Theta: 10000, Interleaved: true}
	text, err := ConfigText(config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "SNAPKV") || !strings.Contains(text, "num_kv_heads: 2") {
		t.Fatalf("textproto lacks fields:\n%s", text)
	}
	parsed := &attnkitpb.SessionConfig{}
	if err := ParseConfigText(text, parsed); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(config, parsed) {
		t.Fatalf("round trip differs:\n%v\n%v", config, parsed)
	}
	if err := ValidateConfig(parsed); err != nil {
		t.Fatal(err)
	}
	s, err := NewSession(parsed)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s2, err := NewSessionFromText(text)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestConfigParseErrorIsInvalidArgument(t *testing.T) {
	err := ParseConfigText("num_layers: \"two\"", &attnkitpb.SessionConfig{})
	asError(t, err, InvalidArgument)
}

func TestErrorsBadConfigNamesTheField(t *testing.T) {
	config := smallConfig()
	config.NumKvHeads = 3 // does not divide num_heads
	for name, err := range map[string]error{
		"validate": ValidateConfig(config),
		"create":   func() error { _, err := NewSession(config); return err }(),
	} {
		e := asError(t, err, InvalidArgument)
		if !strings.Contains(e.Message, "num_kv_heads") {
			t.Errorf("%s: message %q does not name num_kv_heads", name, e.Message)
		}
	}
	eviction := snapKV()
	eviction.WindowSize = -1
	_, err := NewEvictionPolicy(eviction, 2, 4, 2)
	if e := asError(t, err, InvalidArgument); !strings.Contains(e.Message, "window_size") {
		t.Errorf("message %q does not name window_size", e.Message)
	}
	_, err = NewSessionFromText("num_layers: 2 bogus_field: 1")
	asError(t, err, InvalidArgument)
	if err := ValidateConfig(nil); err == nil {
		t.Error("nil config accepted")
	}
}

func TestTensorWrongShapeIsAnError(t *testing.T) {
	s, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := NewTensor(make([]float32, 3*8), 1, 3, 1, 8) // 3 heads, not 4
	k := NewTensor(make([]float32, 2*8), 1, 2, 1, 8)
	v := NewTensor(make([]float32, 2*8), 1, 2, 1, 8)
	out := NewTensor(make([]float32, 3*8), 1, 3, 1, 8)
	e := asError(t, s.Attend(0, q, k, v, out), InvalidArgument)
	if !strings.Contains(e.Message, "q") {
		t.Errorf("message %q does not name q", e.Message)
	}
	// A shape larger than the data is caught before the library could read past the slice.
	big := NewTensor(make([]float32, 8), 1, 4, 1, 8)
	e = asError(t, s.Attend(0, big, k, v, NewTensor(make([]float32, 32), 1, 4, 1, 8)), InvalidArgument)
	if !strings.Contains(e.Message, "needs 32 elements") {
		t.Errorf("message %q", e.Message)
	}
	// So are strides reaching past it, and a missing tensor is the library's error.
	strided := NewTensor(make([]float32, 32), 1, 4, 1, 8).WithStrides(32, 8, 32, 2)
	asError(t, s.Attend(0, strided, k, v, NewTensor(make([]float32, 32), 1, 4, 1, 8)), InvalidArgument)
	asError(t, s.Attend(0, nil, k, v, out), InvalidArgument)
	var none *Float32Tensor
	asError(t, s.Attend(0, none, k, v, out), InvalidArgument)
	// The session is still usable.
	if _, err := attend(s, 0, 1, 0); err != nil {
		t.Fatal(err)
	}
}

func TestTensorStridesMatchContiguous(t *testing.T) {
	// The same tokens as [1, heads, tokens, dim] and as a strided view over [tokens, heads, dim].
	const tokens = 5
	contiguous, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer contiguous.Close()
	strided, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer strided.Close()
	want, err := attend(contiguous, 0, tokens, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Transpose the inputs into [tokens, heads, dim] buffers.
	transpose := func(data []float32, heads int) []float32 {
		out := make([]float32, len(data))
		for h := 0; h < heads; h++ {
			for tok := 0; tok < tokens; tok++ {
				copy(out[(tok*heads+h)*8:(tok*heads+h+1)*8], data[(h*tokens+tok)*8:(h*tokens+tok+1)*8])
			}
		}
		return out
	}
	view := func(data []float32, heads int) *Float32Tensor {
		return NewTensor(data, 1, int64(heads), tokens, 8).WithStrides(int64(len(data)), 8, int64(heads*8), 1)
	}
	out := make([]float32, 4*tokens*8)
	err = strided.Attend(0, view(transpose(filled(4*tokens*8, 0), 4), 4), view(transpose(filled(2*tokens*8, 1), 2), 2),
		view(transpose(filled(2*tokens*8, 2), 2), 2), view(out, 4))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(out))
	for h := 0; h < 4; h++ {
		for tok := 0; tok < tokens; tok++ {
			copy(got[(h*tokens+tok)*8:(h*tokens+tok+1)*8], out[(tok*4+h)*8:(tok*4+h+1)*8])
		}
	}
	for i := range want {
		if d := want[i] - got[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("element %d: contiguous %v, strided %v", i, want[i], got[i])
		}
	}
}

func TestSessionDecodeAndStats(t *testing.T) {
	config := smallConfig()
	config.Eviction = snapKV()
	s, err := NewSession(config)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := 0
	for tokens := 12; steps < 20; tokens = 1 {
		for layer := 0; layer < 2; layer++ {
			out, err := attend(s, layer, tokens, float32(steps))
			if err != nil {
				t.Fatal(err)
			}
			nonzero := false
			for _, v := range out {
				nonzero = nonzero || v != 0
			}
			if !nonzero {
				t.Fatal("attention output is all zeros")
			}
		}
		steps++
	}
	positions, err := s.Positions(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(positions) == 0 || len(positions) >= 12+19 {
		t.Fatalf("layer 0 holds %d tokens: eviction did not run", len(positions))
	}
	held, err := s.BytesHeld()
	if err != nil || held <= 0 {
		t.Fatalf("bytes held %d, %v", held, err)
	}
	stats, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.TokensSeen != 12+19 || stats.Evictions == 0 || stats.BytesHeld != held {
		t.Fatalf("stats: %v", stats)
	}
	next, err := s.NextPosition(0)
	if err != nil || next != 12+19 {
		t.Fatalf("next position %d, %v", next, err)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if next, _ := s.NextPosition(0); next != 0 {
		t.Fatalf("next position after reset %d", next)
	}
}

func TestSessionObserveAppendsNothing(t *testing.T) {
	config := smallConfig()
	config.Eviction = snapKV()
	config.Eviction.DeferEvictionToDecode = true
	s, err := NewSession(config)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for layer := 0; layer < 2; layer++ {
		if _, err := attend(s, layer, 12, 1); err != nil {
			t.Fatal(err)
		}
	}
	held, _ := s.BytesHeld()
	q := NewTensor(filled(4*3*8, 5), 1, 4, 3, 8)
	out := NewTensor(make([]float32, 4*3*8), 1, 4, 3, 8)
	for layer := 0; layer < 2; layer++ {
		if err := s.Observe(layer, q, out); err != nil {
			t.Fatal(err)
		}
	}
	for layer := 0; layer < 2; layer++ {
		if err := s.Observe(layer, q, nil); err != nil {
			t.Fatal(err)
		}
	}
	nonzero := false
	for _, v := range out.Data {
		nonzero = nonzero || v != 0
	}
	if !nonzero {
		t.Fatal("observe output is all zeros")
	}
	if after, _ := s.BytesHeld(); after != held {
		t.Fatalf("bytes held %d after observing, %d before", after, held)
	}
	if next, _ := s.NextPosition(0); next != 12 {
		t.Fatalf("next position %d after observing", next)
	}
	asError(t, s.Observe(1, q, nil), FailedPrecondition)
	asError(t, s.Observe(2, q, nil), InvalidArgument)
}

func TestEvictionPolicySelect(t *testing.T) {
	p, err := NewEvictionPolicy(snapKV(), 2, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	budget, err := p.LayerBudget(0)
	if err != nil || budget != 10 {
		t.Fatalf("budget %d, %v", budget, err)
	}
	if needs, err := p.NeedsKeys(); err != nil || needs {
		t.Fatalf("needs keys %v, %v", needs, err)
	}
	const cache = 16
	attention := make([]float32, 4*2*cache)
	for i := range attention {
		attention[i] = 1.0 / cache
	}
	if err := p.Observe(0, NewTensor(attention, 1, 4, 2, cache), nil); err != nil {
		t.Fatal(err)
	}
	rows, err := p.Select(0, nil, []int64{cache})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || len(rows[0]) != int(budget) {
		t.Fatalf("kept %v, want one row of %d", rows, budget)
	}
	for i, position := range rows[0] {
		if position < 0 || position >= cache || (i > 0 && position <= rows[0][i-1]) {
			t.Fatalf("kept positions not ascending in range: %v", rows[0])
		}
	}
	// Wrong attention shape: an error, not a crash.
	asError(t, p.Observe(0, NewTensor(attention[:8], 1, 1, 1, 8), nil), InvalidArgument)
	if err := p.Reset(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseTwiceReturnsNil(t *testing.T) {
	s, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p, err := NewEvictionPolicy(snapKV(), 2, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Close() != nil || p.Close() != nil {
		t.Fatal("EvictionPolicy double Close failed")
	}
}

func TestCloseThenUseIsAnError(t *testing.T) {
	s, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = attend(s, 0, 1, 0)
	if e := asError(t, err, FailedPrecondition); !strings.Contains(e.Message, "closed") {
		t.Errorf("message %q", e.Message)
	}
	_, err = s.BytesHeld()
	asError(t, err, FailedPrecondition)
	_, err = s.Stats()
	asError(t, err, FailedPrecondition)
	_, err = s.Positions(0, 0, 0)
	asError(t, err, FailedPrecondition)
	asError(t, s.Reset(), FailedPrecondition)
	p, err := NewEvictionPolicy(snapKV(), 2, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	_, err = p.Select(0, nil, []int64{4})
	asError(t, err, FailedPrecondition)
}

// Sessions on many goroutines at once give the same results as one at a time (run with -race), and
// concurrent calls on one shared session are serialized, not a crash.
func TestConcurrentSessions(t *testing.T) {
	run := func(s *Session) ([]float32, error) {
		var last []float32
		for step := 0; step < 10; step++ {
			tokens := 1
			if step == 0 {
				tokens = 8
			}
			for layer := 0; layer < 2; layer++ {
				out, err := attend(s, layer, tokens, float32(step))
				if err != nil {
					return nil, err
				}
				last = out
			}
		}
		return last, nil
	}
	reference, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	want, err := run(reference)
	reference.Close()
	if err != nil {
		t.Fatal(err)
	}
	const goroutines = 8
	var wg sync.WaitGroup
	errs := make([]error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s, err := NewSession(smallConfig())
			if err != nil {
				errs[g] = err
				return
			}
			defer s.Close()
			got, err := run(s)
			if err != nil {
				errs[g] = err
				return
			}
			for i := range want {
				if got[i] != want[i] {
					errs[g] = errors.New("results differ from the sequential run")
					return
				}
			}
		}(g)
	}
	wg.Wait()
	for g, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", g, err)
		}
	}
	// One session shared by goroutines racing a Close: each call succeeds or reports the session
	// closed (FAILED_PRECONDITION), never crashes.
	shared, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	okOrClosed := func(err error) {
		var e *Error
		if err != nil && !(errors.As(err, &e) && e.Code == FailedPrecondition) {
			t.Error(err)
		}
	}
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := shared.BytesHeld()
			okOrClosed(err)
			_, err = attend(shared, 0, 1, 0)
			okOrClosed(err)
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); shared.Close() }()
	wg.Wait()
}

func TestSessionSaveLoadAndForkGoOnBitForBit(t *testing.T) {
	config := smallConfig()
	config.Eviction = snapKV()
	original, err := NewSession(config)
	if err != nil {
		t.Fatal(err)
	}
	defer original.Close()
	for layer := 0; layer < 2; layer++ {
		if _, err := attend(original, layer, 12, 1); err != nil {
			t.Fatal(err)
		}
	}
	blob, err := original.Save()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := NewSession(config)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Close()
	if err := loaded.Load(blob); err != nil {
		t.Fatal(err)
	}
	fork, err := original.Fork()
	if err != nil {
		t.Fatal(err)
	}
	defer fork.Close()
	for step := 0; step < 6; step++ { // a 10-token budget: the steps evict
		for layer := 0; layer < 2; layer++ {
			seed := float32(10 + step)
			want, _ := attend(original, layer, 1, seed)
			for name, s := range map[string]*Session{"loaded": loaded, "fork": fork} {
				got, err := attend(s, layer, 1, seed)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("%s, step %d layer %d element %d: %v vs %v", name, step, layer, i, got[i], want[i])
					}
				}
			}
		}
	}
	before, _ := loaded.Save()
	e := asError(t, loaded.Load(blob[:len(blob)-1]), InvalidArgument)
	if !strings.Contains(e.Message, "blob: truncated") {
		t.Fatalf("message %q", e.Message)
	}
	if after, _ := loaded.Save(); string(after) != string(before) {
		t.Fatal("a failed load changed the session")
	}
}

// A ragged batch of two: one sequence prefills while the other decodes, a retired sequence's slot
// takes a new one; every sequence computes exactly what a session of its own computes.
func TestSessionRaggedCallsMatchSeparateSessions(t *testing.T) {
	config := func(batch int32) *attnkitpb.SessionConfig {
		c := &attnkitpb.SessionConfig{NumLayers: 1, NumHeads: 4, NumKvHeads: 2, HeadDim: 8, PageSize: 4, BatchSize: batch}
		c.Eviction = snapKV()
		return c
	}
	newSession := func(batch int32) *Session {
		s, err := NewSession(config(batch))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ragged := newSession(2)
	defer ragged.Close()
	own := []*Session{newSession(1), newSession(1)}
	defer func() {
		for _, s := range own {
			s.Close()
		}
	}()
	seed := float32(1)
	step := func(counts []int64) {
		width := counts[0]
		if counts[1] > width {
			width = counts[1]
		}
		qRow, kvRow := 4*width*8, 2*width*8
		nan := float32(math.NaN())
		q, k, v := make([]float32, 2*qRow), make([]float32, 2*kvRow), make([]float32, 2*kvRow)
		for _, x := range [][]float32{q, k, v} {
			for i := range x {
				x[i] = nan // padding: never read
			}
		}
		want := make([][]float32, 2)
		for b, n := range counts {
			if n == 0 {
				continue
			}
			qb, kb, vb := filled(int(4*n*8), seed), filled(int(2*n*8), seed+1), filled(int(2*n*8), seed+2)
			seed += 3
			for h := int64(0); h < 4; h++ {
				copy(q[int64(b)*qRow+h*width*8:], qb[h*n*8:(h+1)*n*8])
			}
			for h := int64(0); h < 2; h++ {
				copy(k[int64(b)*kvRow+h*width*8:], kb[h*n*8:(h+1)*n*8])
				copy(v[int64(b)*kvRow+h*width*8:], vb[h*n*8:(h+1)*n*8])
			}
			out := NewTensor(make([]float32, 4*n*8), 1, 4, n, 8)
			if err := own[b].Attend(0, NewTensor(qb, 1, 4, n, 8), NewTensor(kb, 1, 2, n, 8), NewTensor(vb, 1, 2, n, 8), out); err != nil {
				t.Fatal(err)
			}
			want[b] = out.Data
		}
		out := NewTensor(make([]float32, 2*qRow), 2, 4, width, 8)
		if err := ragged.AttendRagged(0, NewTensor(q, 2, 4, width, 8), NewTensor(k, 2, 2, width, 8), NewTensor(v, 2, 2, width, 8), out, counts); err != nil {
			t.Fatal(err)
		}
		for b, n := range counts {
			for h := int64(0); h < 4; h++ {
				for r := int64(0); r < width; r++ {
					for d := int64(0); d < 8; d++ {
						got := out.Data[int64(b)*qRow+(h*width+r)*8+d]
						expected := float32(0)
						if r < n {
							expected = want[b][(h*n+r)*8+d]
						}
						if got != expected {
							t.Fatalf("counts %v, sequence %d head %d row %d: %v, want %v", counts, b, h, r, got, expected)
						}
					}
				}
			}
		}
		held, _ := ragged.BytesHeld()
		a, _ := own[0].BytesHeld()
		c, _ := own[1].BytesHeld()
		if held != a+c {
			t.Fatalf("bytes held %d, separate sessions %d", held, a+c)
		}
	}
	step([]int64{9, 0})
	step([]int64{1, 12}) // one decodes while the other prefills
	for i := 0; i < 6; i++ {
		step([]int64{1, 1})
	}
	if err := ragged.ResetSequence(0); err != nil {
		t.Fatal(err)
	}
	own[0].Close()
	own[0] = newSession(1)
	if next, _ := ragged.NextPosition(0); next != 0 {
		t.Fatalf("next position of a retired sequence: %d", next)
	}
	step([]int64{5, 1})
	for i := 0; i < 4; i++ {
		step([]int64{1, 1})
	}
	q := NewTensor(make([]float32, 2*4*2*8), 2, 4, 2, 8)
	kv := NewTensor(make([]float32, 2*2*2*8), 2, 2, 2, 8)
	e := asError(t, ragged.AttendRagged(0, q, kv, kv, q, []int64{3, 1}), InvalidArgument)
	if !strings.Contains(e.Message, "new_tokens: sequence 0 brings 3 tokens") {
		t.Fatalf("message %q", e.Message)
	}
	e = asError(t, ragged.ResetSequence(2), InvalidArgument)
	if !strings.Contains(e.Message, "sequence: must be in [0, 2), got 2") {
		t.Fatalf("message %q", e.Message)
	}
}
