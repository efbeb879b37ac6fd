package attnkit

// #include <stdlib.h>
// #include <string.h>
import "C"

import (
	"runtime"
	"sync"
	"unsafe"

	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// cAlignment is the alignment of AllocTensor's memory: a cache line, and enough for any vector load.
const cAlignment = 64

// CFloat32Tensor is a float32 tensor in C memory allocated by AllocTensor, seen from Go through the
// slice Data returns. The library reads and writes that memory in place: a call copies nothing, and
// what the library writes into an output is in Data when the call returns.
//
// Close frees the memory; a finalizer frees it when the tensor (and every view of it) becomes
// unreachable, as a safety net only. The slice Data returns does not keep the memory alive: keep
// the tensor reachable while the slice is used (a deferred Close does) and do not use the slice
// after Close. A Close while calls are using the tensor frees the memory when the last of them
// returns; a call that starts after Close returns a FAILED_PRECONDITION error.
type CFloat32Tensor struct {
	mem     *cMemory
	data    []float32
	shape   []int64
	strides []int64
}

// cMemory is one C allocation, shared by a tensor and its views. Calls hold it (users) while the
// library may touch it, so a Close during a call cannot free it under the library.
type cMemory struct {
	mu       sync.Mutex
	ptr      unsafe.Pointer
	elements int
	users    int
	closed   bool
}

// AllocTensor allocates a zero-filled, row-major float32 tensor of the given shape in C memory
// (64-byte aligned). Use View for other shapes over the same memory, e.g. a decode step's
// [1, heads, 1, dim] within a buffer allocated for the prompt's [1, heads, tokens, dim].
func AllocTensor(shape ...int64) (*CFloat32Tensor, error) {
	if len(shape) > capi.MaxDims {
		return nil, newError(InvalidArgument, "AllocTensor: rank %d exceeds %d", len(shape), capi.MaxDims)
	}
	elements := int64(1)
	for _, size := range shape {
		if size < 0 {
			return nil, newError(InvalidArgument, "AllocTensor: negative size in shape %v", shape)
		}
		if size > 0 && elements > (1<<62)/4/size {
			return nil, newError(InvalidArgument, "AllocTensor: shape %v is too large", shape)
		}
		elements *= size
	}
	var ptr unsafe.Pointer
	// posix_memalign(0 bytes) may give NULL, which the library reads as a missing tensor.
	bytes := C.size_t(4*elements + 4)
	if C.posix_memalign(&ptr, cAlignment, bytes) != 0 {
		return nil, newError(ResourceExhausted, "AllocTensor: cannot allocate %d bytes for shape %v",
			4*elements, shape)
	}
	C.memset(ptr, 0, bytes)
	mem := &cMemory{ptr: ptr, elements: int(elements)}
	runtime.SetFinalizer(mem, (*cMemory).free)
	return mem.tensor(append([]int64(nil), shape...), nil, int(elements)), nil
}

func (m *cMemory) tensor(shape, strides []int64, elements int) *CFloat32Tensor {
	return &CFloat32Tensor{mem: m, data: unsafe.Slice((*float32)(m.ptr), m.elements)[:elements:elements],
		shape: shape, strides: strides}
}

// free releases the memory now (the finalizer, and Close with no call in flight).
func (m *cMemory) free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.users == 0 && m.ptr != nil {
		C.free(m.ptr)
		m.ptr = nil
	}
}

// acquire marks the memory in use by a call; release ends that use (and frees it after a Close).
func (m *cMemory) acquire(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return newError(FailedPrecondition, "%s: the tensor is closed", name)
	}
	m.users++
	return nil
}

func (m *cMemory) release() {
	m.mu.Lock()
	m.users--
	freeNow := m.closed && m.users == 0
	m.mu.Unlock()
	if freeNow {
		m.free()
	}
}

// Data returns the tensor's elements, a slice over the C memory (nil after Close): for AllocTensor
// and View the shape's elements in row-major order; a WithStrides tensor keeps the slice of the
// tensor it was made from.
func (t *CFloat32Tensor) Data() []float32 {
	t.mem.mu.Lock()
	defer t.mem.mu.Unlock()
	if t.mem.closed {
		return nil
	}
	return t.data
}

// Shape returns the tensor's sizes.
func (t *CFloat32Tensor) Shape() []int64 { return append([]int64(nil), t.shape...) }

// Strides returns the tensor's strides in elements, nil for row-major.
func (t *CFloat32Tensor) Strides() []int64 { return append([]int64(nil), t.strides...) }

// View returns a row-major tensor of shape over the first elements of the same memory (no copy).
// The view shares the memory: closing either closes both.
func (t *CFloat32Tensor) View(shape ...int64) (*CFloat32Tensor, error) {
	if err := checkLayout("View", shape, nil, t.mem.elements); err != nil {
		return nil, err
	}
	elements := 1
	for _, size := range shape {
		elements *= int(size)
	}
	return t.mem.tensor(append([]int64(nil), shape...), nil, elements), nil
}

// WithStrides returns a tensor over the same memory with the same shape and the given strides (in
// elements), e.g. a [1, heads, tokens, dim] view of a [tokens, heads, dim] buffer. The strides are
// checked against the allocation when the tensor is passed to a call.
func (t *CFloat32Tensor) WithStrides(strides ...int64) *CFloat32Tensor {
	return t.mem.tensor(t.shape, append([]int64(nil), strides...), len(t.data))
}

// Close frees the memory (when the calls using it return, if any are in flight); the tensor and
// its views cannot be used afterwards. Closing again returns nil.
func (t *CFloat32Tensor) Close() error {
	t.mem.free()
	return nil
}

func (t *CFloat32Tensor) describe(name string, output bool) (*capi.Tensor, error) {
	if t == nil {
		return nil, nil
	}
	if err := checkLayout(name, t.shape, t.strides, t.mem.elements); err != nil {
		return nil, err
	}
	// The caller holds the memory (acquire) until the call returns, so ptr stays valid.
	return &capi.Tensor{Pointer: uintptr(t.mem.ptr), DeviceType: int32(CPU), DtypeCode: 2, DtypeBits: 32,
		Shape: t.shape, Strides: t.strides, Output: output}, nil
}

func (t *CFloat32Tensor) memory() *cMemory {
	if t == nil {
		return nil
	}
	return t.mem
}
