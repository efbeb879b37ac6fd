package attnkit

import "github.com/attnkit/attnkit/bindings/go/internal/capi"

// Tensor is an argument of a tensor-taking call: *Float32Tensor, *Uint8Tensor, *CFloat32Tensor or
// *DeviceTensor.
type Tensor interface {
	describe(name string, output bool) (*capi.Tensor, error)
}

// Float32Tensor is a float32 tensor over Go memory: Data holds the elements, Shape the sizes and
// Strides (in elements, nil for row-major) the layout, so views such as [batch, heads, tokens, dim]
// over a [batch, tokens, heads, dim] buffer need no copy.
type Float32Tensor struct {
	Data    []float32
	Shape   []int64
	Strides []int64
}

// NewTensor returns a row-major float32 tensor of the given shape over data.
func NewTensor(data []float32, shape ...int64) *Float32Tensor {
	return &Float32Tensor{Data: data, Shape: shape}
}

// WithStrides returns a tensor over the same data with the given strides (in elements).
func (t *Float32Tensor) WithStrides(strides ...int64) *Float32Tensor {
	return &Float32Tensor{Data: t.Data, Shape: t.Shape, Strides: strides}
}

func (t *Float32Tensor) describe(name string, output bool) (*capi.Tensor, error) {
	if t == nil {
		return nil, nil
	}
	if err := checkLayout(name, t.Shape, t.Strides, len(t.Data)); err != nil {
		return nil, err
	}
	data := t.Data
	if data == nil {
		data = []float32{}
	}
	return &capi.Tensor{Data: data, Shape: t.Shape, Strides: t.Strides, Output: output}, nil
}

// Uint8Tensor is a uint8 tensor over Go memory (block masks of SparseAttention).
type Uint8Tensor struct {
	Data    []uint8
	Shape   []int64
	Strides []int64
}

func (t *Uint8Tensor) describe(name string, output bool) (*capi.Tensor, error) {
	if t == nil {
		return nil, nil
	}
	if err := checkLayout(name, t.Shape, t.Strides, len(t.Data)); err != nil {
		return nil, err
	}
	data := t.Data
	if data == nil {
		data = []uint8{}
	}
	return &capi.Tensor{Bytes: data, Shape: t.Shape, Strides: t.Strides, Output: output}, nil
}

// Device is a DLPack device type.
type Device int32

// Devices.
const (
	CPU  Device = 1
	CUDA Device = 2
)

// DType is a tensor element type.
type DType int

// Element types.
const (
	Float32 DType = iota
	Float16
	BFloat16
	Uint8
)

// DeviceTensor is a tensor in memory the Go runtime does not manage (CUDA memory, or host memory
// allocated by C): Pointer is passed to the library as it is, so it must stay valid for the call.
type DeviceTensor struct {
	Pointer  uintptr
	Device   Device
	DeviceID int
	DType    DType
	Shape    []int64
	Strides  []int64
}

func (t *DeviceTensor) describe(name string, output bool) (*capi.Tensor, error) {
	if t == nil {
		return nil, nil
	}
	codes := map[DType][2]uint8{Float32: {2, 32}, Float16: {2, 16}, BFloat16: {4, 16}, Uint8: {1, 8}}
	code, ok := codes[t.DType]
	if !ok {
		return nil, newError(InvalidArgument, "%s: unknown dtype %d", name, int(t.DType))
	}
	if len(t.Shape) > capi.MaxDims || (t.Strides != nil && len(t.Strides) != len(t.Shape)) {
		return nil, newError(InvalidArgument, "%s: shape %v and strides %v", name, t.Shape, t.Strides)
	}
	return &capi.Tensor{Pointer: t.Pointer, DeviceType: int32(t.Device), DeviceID: int32(t.DeviceID),
		DtypeCode: code[0], DtypeBits: code[1], Shape: t.Shape, Strides: t.Strides, Output: output}, nil
}

// checkLayout checks that a Go-memory tensor stays within its n elements: the library trusts the
// shape and strides it is given, and reading past a Go slice must never happen.
func checkLayout(name string, shape, strides []int64, n int) error {
	if len(shape) > capi.MaxDims {
		return newError(InvalidArgument, "%s: rank %d exceeds %d", name, len(shape), capi.MaxDims)
	}
	if strides != nil && len(strides) != len(shape) {
		return newError(InvalidArgument, "%s: %d strides for a shape of rank %d", name, len(strides), len(shape))
	}
	elements, extent := int64(1), int64(1)
	for i, size := range shape {
		if size < 0 {
			return newError(InvalidArgument, "%s: negative size in shape %v", name, shape)
		}
		elements *= size
		if strides != nil {
			if strides[i] < 0 {
				return newError(InvalidArgument, "%s: negative stride in %v", name, strides)
			}
			if size > 0 {
				extent += (size - 1) * strides[i]
			}
		}
	}
	if strides == nil {
		extent = elements
	}
	if elements == 0 {
		extent = 0
	}
	if extent > int64(n) {
		return newError(InvalidArgument, "%s: shape %v (strides %v) needs %d elements, the data has %d",
			name, shape, strides, extent, n)
	}
	return nil
}

// memoryTensor is a tensor whose memory a call must hold while the library may touch it.
type memoryTensor interface {
	memory() *cMemory
}

// describeAll describes tensors named names; the last one is the output when withOutput is set. The
// caller runs release after the call: until then the C memory of AllocTensor tensors stays valid
// (a concurrent Close waits for the call, a finalizer cannot run).
func describeAll(names []string, tensors []Tensor, withOutput bool) (described []*capi.Tensor, release func(), err error) {
	var held []*cMemory
	release = func() {
		for _, m := range held {
			m.release()
		}
	}
	described = make([]*capi.Tensor, len(tensors))
	for i, t := range tensors {
		if t == nil {
			continue
		}
		if m, ok := t.(memoryTensor); ok && m.memory() != nil {
			if err := m.memory().acquire(names[i]); err != nil {
				release()
				return nil, nil, err
			}
			held = append(held, m.memory())
		}
		d, err := t.describe(names[i], withOutput && i == len(tensors)-1)
		if err != nil {
			release()
			return nil, nil, err
		}
		described[i] = d
	}
	return described, release, nil
}
