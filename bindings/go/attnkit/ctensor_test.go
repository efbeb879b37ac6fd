package attnkit

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// alloc allocates a C tensor of shape filled with filled(n, seed), or zeros when seed < 0.
func alloc(t testing.TB, seed float32, shape ...int64) *CFloat32Tensor {
	t.Helper()
	c, err := AllocTensor(shape...)
	if err != nil {
		t.Fatal(err)
	}
	if seed >= 0 {
		copy(c.Data(), filled(len(c.Data()), seed))
	}
	return c
}

// oneLayer is smallConfig with one layer, so consecutive calls on layer 0 are decode steps.
func oneLayer() *attnkitpb.SessionConfig {
	config := smallConfig()
	config.NumLayers = 1
	return config
}

func sameValues(t *testing.T, what string, want, got []float32) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("%s: element %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// C-memory tensors are passed to the library as they are: no byte is staged, the library writes the
// output into the memory the slice views, and the result is the Go-slice call's, bit for bit.
func TestTensorCMemoryIsNotCopied(t *testing.T) {
	const tokens = 5
	reference, err := NewSession(oneLayer())
	if err != nil {
		t.Fatal(err)
	}
	defer reference.Close()
	session, err := NewSession(oneLayer())
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()

	q, k, v := alloc(t, 0, 1, 4, tokens, 8), alloc(t, 1, 1, 2, tokens, 8), alloc(t, 2, 1, 2, tokens, 8)
	out := alloc(t, -1, 1, 4, tokens, 8)
	defer q.Close()
	defer k.Close()
	defer v.Close()
	defer out.Close()
	view := out.Data() // taken before the call: no copy back may be needed to see the result

	before := capi.StagedBytes()
	want, err := attend(reference, 0, tokens, 0) // Go slices: staged in and copied back
	if err != nil {
		t.Fatal(err)
	}
	goStaged := capi.StagedBytes() - before
	if wantStaged := uint64(4 * (4 + 2 + 2 + 4 + 4) * tokens * 8); goStaged != wantStaged {
		t.Errorf("Go slices staged %d bytes, want %d (q, k, v, out in and out back)", goStaged, wantStaged)
	}

	before = capi.StagedBytes()
	if err := session.Attend(0, q, k, v, out); err != nil {
		t.Fatal(err)
	}
	if staged := capi.StagedBytes() - before; staged != 0 {
		t.Errorf("C-memory tensors staged %d bytes, want 0", staged)
	}
	sameValues(t, "out through the slice taken before the call", want, view)

	// The descriptor points at the slice's memory, and inputs are read where the slice writes: a
	// change made through q's slice is seen by the next call without anything passed again.
	described, err := q.describe("q", false)
	if err != nil {
		t.Fatal(err)
	}
	if described.Pointer != uintptr(unsafe.Pointer(&q.Data()[0])) || described.Data != nil {
		t.Errorf("q is described as %#x (Go data %v), its slice is at %p", described.Pointer, described.Data != nil, &q.Data()[0])
	}
	decodeQ, _ := q.View(1, 4, 1, 8)
	decodeK, _ := k.View(1, 2, 1, 8)
	decodeV, _ := v.View(1, 2, 1, 8)
	decodeOut, _ := out.View(1, 4, 1, 8)
	copy(decodeQ.Data(), filled(4*8, 7))
	copy(decodeK.Data(), filled(2*8, 8))
	copy(decodeV.Data(), filled(2*8, 9))
	if err := session.Attend(0, decodeQ, decodeK, decodeV, decodeOut); err != nil {
		t.Fatal(err)
	}
	goOut := make([]float32, 4*8)
	err = reference.Attend(0, NewTensor(filled(4*8, 7), 1, 4, 1, 8), NewTensor(filled(2*8, 8), 1, 2, 1, 8),
		NewTensor(filled(2*8, 9), 1, 2, 1, 8), NewTensor(goOut, 1, 4, 1, 8))
	if err != nil {
		t.Fatal(err)
	}
	sameValues(t, "decode step through views", goOut, view[:4*8])
}

// A strided view of C memory ([tokens, heads, dim] seen as [1, heads, tokens, dim]) matches the
// contiguous layout, and a layout reaching past the allocation is refused before the library reads.
func TestTensorCMemoryViews(t *testing.T) {
	const tokens = 3
	s, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	strided := func(seed float32, heads int64) *CFloat32Tensor {
		c := alloc(t, -1, tokens, heads, 8)
		data, src := c.Data(), filled(int(heads*tokens*8), seed)
		for h := int64(0); h < heads; h++ {
			for tok := int64(0); tok < tokens; tok++ {
				copy(data[(tok*heads+h)*8:(tok*heads+h+1)*8], src[(h*tokens+tok)*8:(h*tokens+tok+1)*8])
			}
		}
		c, err := c.View(1, heads, tokens, 8)
		if err != nil {
			t.Fatal(err)
		}
		return c.WithStrides(heads*tokens*8, 8, heads*8, 1)
	}
	q, k, v := strided(0, 4), strided(1, 2), strided(2, 2)
	out := alloc(t, -1, 1, 4, tokens, 8)
	defer q.Close()
	defer k.Close()
	defer v.Close()
	defer out.Close()
	if err := s.Attend(0, q, k, v, out); err != nil {
		t.Fatal(err)
	}
	reference, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer reference.Close()
	want, err := attend(reference, 0, tokens, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if d := want[i] - out.Data()[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("element %d: contiguous %v, strided %v", i, want[i], out.Data()[i])
		}
	}

	if _, err := q.View(1, 4, tokens+1, 8); err == nil {
		t.Error("a view larger than the allocation was accepted")
	}
	past := out.WithStrides(4*tokens*8, tokens*8, 16, 1) // token stride 16 reaches past 96 elements
	e := asError(t, s.Attend(1, q, k, v, past), InvalidArgument)
	if !strings.Contains(e.Message, "out") {
		t.Errorf("message %q does not name out", e.Message)
	}
	if _, err := AllocTensor(2, -1); err == nil {
		t.Error("a negative size was accepted")
	}
}

// Close frees the memory: the slice is gone, a later call names the closed tensor, closing again is
// nil; a Close while a call holds the memory frees it when the call releases it.
func TestTensorCMemoryClose(t *testing.T) {
	s, err := NewSession(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q, k, v, out := alloc(t, 0, 1, 4, 1, 8), alloc(t, 1, 1, 2, 1, 8), alloc(t, 2, 1, 2, 1, 8), alloc(t, -1, 1, 4, 1, 8)
	defer q.Close()
	defer v.Close()
	defer out.Close()
	kView, _ := k.View(1, 2, 1, 8)
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if k.Data() != nil || kView.Data() != nil {
		t.Error("Data after Close is not nil")
	}
	e := asError(t, s.Attend(0, q, kView, v, out), FailedPrecondition)
	if !strings.Contains(e.Message, "k: the tensor is closed") {
		t.Errorf("message %q", e.Message)
	}

	// A Close during a call (the call holds the memory) waits for the call to release it.
	_, release, err := describeAll([]string{"q"}, []Tensor{q}, false)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	if q.mem.ptr == nil {
		t.Error("Close freed memory a call still holds")
	}
	release()
	if q.mem.ptr != nil {
		t.Error("the memory was not freed when the call released it")
	}
	asError(t, s.Attend(0, q, k, v, out), FailedPrecondition)
}
