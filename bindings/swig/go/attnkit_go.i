/* The Go module: SWIG generates package capi (bindings/go/internal/capi, internal to the module) and
 * its C wrapper, both compiled by cgo. This file defines the Go side of the typemap contracts of
 * ../attnkit.i; the idiomatic API over it is bindings/go/attnkit.
 *
 * cgo pointer rules shape the contracts: Go memory may be passed to C for the duration of a call only
 * when it holds no Go pointers. Byte, text and int64 ranges qualify and are passed in place. A
 * DLTensor holds a pointer to its data, so a Go-memory tensor is staged in C memory for the call
 * (its description and a copy of its data) and outputs are copied back; Go 1.19 has no
 * runtime.Pinner that would let a Go-memory descriptor point at Go data. Pointer tensors (C memory
 * from attnkit.AllocTensor, device memory) are passed as they are: only their description is
 * staged. */
%module capi

/* Headers and link flags come from pkg-config (attnkit.pc; the build points PKG_CONFIG_PATH at a
 * build-tree copy). The shim's types are used by the staging code below. */
%insert(cgo_comment_typedefs) %{
#cgo pkg-config: attnkit
#include <stdlib.h>
#include <string.h>
#include "attnkit/attnkit.h"
#include "attnkit_swig_shim.h"
%}

/* ---- status: every fallible call returns a Go error (nil on success); the status is freed ---- */
%typemap(gotype) attnkit_status* "error"
%typemap(imtype) attnkit_status* "uintptr"
%typemap(out) attnkit_status* %{ $result = $1; %}
%typemap(goout) attnkit_status* %{ $result = statusError($1) %}

/* The status accessors take the raw handle. */
%typemap(gotype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "uintptr"
%typemap(imtype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "uintptr"
%typemap(goin) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "$result = $input"
%typemap(in) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE %{ $1 = ($1_ltype)$input; %}

/* ---- opaque objects: uintptr handles owned by the idiomatic layer ---- */
%define ATTNKIT_HANDLE(TYPE)
%typemap(gotype) TYPE*, const TYPE* "uintptr"
%typemap(imtype) TYPE*, const TYPE* "uintptr"
%typemap(goin) TYPE*, const TYPE* "$result = $input"
%typemap(goout) TYPE*, const TYPE* "$result = $1"
%typemap(in) TYPE*, const TYPE* %{ $1 = ($1_ltype)$input; %}
%typemap(out) TYPE*, const TYPE* %{ $result = ($1_ltype)$1; %}
%enddef
/* The new object of a _create/_select call, written into a Go uintptr (Go memory without pointers). */
%define ATTNKIT_HANDLE_OUT(TYPE)
%typemap(gotype) TYPE** out "*uintptr"
%typemap(imtype) TYPE** out "*uintptr"
%typemap(goin) TYPE** out "$result = $input"
%typemap(in) TYPE** out %{ $1 = ($1_ltype)$input; *$1 = NULL; %}
%enddef

/* ---- borrowed ranges: Go slices and strings hold no Go pointers, so they are passed in place ---- */
%typemap(gotype) (const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE) "[]byte"
%typemap(in) (const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE)
%{ $1 = ($1_ltype)$input.array; $2 = ($2_ltype)$input.len; %}
%typemap(gotype) (const int64_t* ATTNKIT_INT64S, size_t ATTNKIT_INT64S_SIZE) "[]int64"
%typemap(in) (const int64_t* ATTNKIT_INT64S, size_t ATTNKIT_INT64S_SIZE)
%{ $1 = ($1_ltype)$input.array; $2 = ($2_ltype)$input.len; %}
%typemap(gotype) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "string"
%typemap(in) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE)
%{ $1 = ($1_ltype)$input.p; $2 = ($2_ltype)$input.n; %}

/* ---- library-owned results: copied into Go slices, then freed (nil when the call failed) ---- */
%define ATTNKIT_GO_OWNED_OUT(TYPE, GOTYPE, TAKE)
%typemap(gotype) TYPE "*GOTYPE"
%typemap(imtype) TYPE "*uintptr"
%typemap(goin) TYPE %{var owned_$1 uintptr
	$result = &owned_$1%}
%typemap(in) TYPE %{ $1 = ($1_ltype)$input; *$1 = NULL; %}
%typemap(goargout) TYPE %{*$1 = TAKE(owned_$1)%}
%enddef
ATTNKIT_GO_OWNED_OUT(attnkit_buffer** ATTNKIT_BUFFER_OUT, []byte, takeBuffer)
ATTNKIT_GO_OWNED_OUT(attnkit_int64_array** ATTNKIT_INT64_ARRAY_OUT, []int64, takeInt64Array)

/* A pointer into a library-owned object, read before the owner is freed. */
%typemap(gotype) const int64_t* ATTNKIT_BORROWED_INT64S "uintptr"
%typemap(imtype) const int64_t* ATTNKIT_BORROWED_INT64S "uintptr"
%typemap(goout) const int64_t* ATTNKIT_BORROWED_INT64S "$result = $1"
%typemap(out) const int64_t* ATTNKIT_BORROWED_INT64S %{ $result = $1; %}

/* A size out-parameter written into Go memory. */
%typemap(gotype) size_t* ATTNKIT_SIZE_OUT "*uint64"
%typemap(imtype) size_t* ATTNKIT_SIZE_OUT "*uint64"
%typemap(goin) size_t* ATTNKIT_SIZE_OUT "$result = $input"
%typemap(in) size_t* ATTNKIT_SIZE_OUT %{ $1 = ($1_ltype)$input; %}

/* ---- tensors: a *Tensor staged in C memory for the call, outputs copied back ---- */
%typemap(gotype) const DLTensor*, DLTensor* "*Tensor"
%typemap(imtype) const DLTensor*, DLTensor* "uintptr"
%typemap(goin) const DLTensor*, DLTensor* %{staged_$1 := stageTensor($input)
	$result = stagedDesc(staged_$1)%}
%typemap(goargout) const DLTensor*, DLTensor* %{releaseStaged(staged_$1)%}
%typemap(in) const DLTensor* (DLTensor dl_tensor), DLTensor* (DLTensor dl_tensor)
%{ $1 = attnkit_swig_tensor_from_desc((const attnkit_swig_tensor_desc*)$input, &dl_tensor); %}

%go_import("sync/atomic")

%insert(go_wrapper) %{
// Status is a non-OK attnkit_status: its code (numbered like absl::StatusCode) and message.
type Status struct {
	Code    int
	Message string
}

func (s *Status) Error() string { return s.Message }

// statusError turns a status handle into an error (nil for NULL) and frees the status.
func statusError(status uintptr) error {
	if status == 0 {
		return nil
	}
	defer Attnkit_status_free(status)
	return &Status{Code: int(Attnkit_status_get_code(status)), Message: Attnkit_status_get_message(status)}
}

func takeBuffer(owned uintptr) []byte {
	if owned == 0 {
		return nil
	}
	buffer := (*C.attnkit_buffer)(unsafe.Pointer(owned))
	defer C.attnkit_buffer_free(buffer)
	return C.GoBytes(unsafe.Pointer(buffer.data), C.int(buffer.size))
}

func takeInt64Array(owned uintptr) []int64 {
	if owned == 0 {
		return nil
	}
	array := (*C.attnkit_int64_array)(unsafe.Pointer(owned))
	defer C.attnkit_int64_array_free(array)
	return CopyInt64s(uintptr(unsafe.Pointer(array.data)), int(array.size))
}

// CopyInt64s copies n int64 values from C memory at data (a pointer the caller's object owns).
func CopyInt64s(data uintptr, n int) []int64 {
	values := make([]int64, n)
	if n > 0 {
		copy(values, unsafe.Slice((*int64)(unsafe.Pointer(data)), n))
	}
	return values
}

// MaxDims is the most dimensions a tensor may have (ATTNKIT_SWIG_MAX_DIMS).
const MaxDims = int(C.ATTNKIT_SWIG_MAX_DIMS)

// Tensor describes a tensor for one call: float32 or uint8 host data from Go, or a device (or
// foreign host) pointer passed as it is. Shape and strides are in elements; nil Strides means
// row-major. The caller (package attnkit) has checked that Shape and Strides stay within the data.
type Tensor struct {
	Data       []float32
	Bytes      []uint8 // uint8 data (block masks), used when Data is nil
	Pointer    uintptr // used when Data and Bytes are nil
	DeviceType int32   // DLDeviceType: 1 CPU, 2 CUDA
	DeviceID   int32
	DtypeCode  uint8 // DLDataTypeCode: 2 float, 4 bfloat
	DtypeBits  uint8
	Shape      []int64
	Strides    []int64
	Output     bool // written by the call: copied back into Data afterwards
}

// stagedBytes counts the bytes copied between Go and C memory by staging (both directions).
var stagedBytes uint64

// StagedBytes returns how many bytes tensor staging has copied between Go and C memory so far: a
// call on Go-memory tensors adds their sizes (and its output's again, copied back), a call on
// pointer tensors (C memory from attnkit.AllocTensor, device memory) adds nothing.
func StagedBytes() uint64 { return atomic.LoadUint64(&stagedBytes) }

// stagedTensor is a Tensor's C-memory copy for the duration of one call.
type stagedTensor struct {
	tensor *Tensor
	cdesc  *C.attnkit_swig_tensor_desc
	cdata  unsafe.Pointer
}

func stageTensor(t *Tensor) stagedTensor {
	if t == nil {
		return stagedTensor{}
	}
	s := stagedTensor{tensor: t}
	s.cdesc = (*C.attnkit_swig_tensor_desc)(C.calloc(1, C.sizeof_attnkit_swig_tensor_desc))
	d := s.cdesc
	if host, code, bits := t.host(); host != nil {
		// malloc(0) may return NULL, which the library reads as a missing tensor.
		s.cdata = C.malloc(C.size_t(len(host)) + 1)
		if len(host) > 0 {
			C.memcpy(s.cdata, unsafe.Pointer(&host[0]), C.size_t(len(host)))
			atomic.AddUint64(&stagedBytes, uint64(len(host)))
		}
		d.data = s.cdata
		d.device_type = 1
		d.dtype_code = code
		d.dtype_bits = bits
	} else {
		d.data = unsafe.Pointer(t.Pointer)
		d.device_type = C.int32_t(t.DeviceType)
		d.device_id = C.int32_t(t.DeviceID)
		d.dtype_code = C.uint8_t(t.DtypeCode)
		d.dtype_bits = C.uint8_t(t.DtypeBits)
	}
	d.dtype_lanes = 1
	if len(t.Shape) > MaxDims {
		d.ndim = -1 // rejected by the library with a message naming the tensor
	} else {
		d.ndim = C.int32_t(len(t.Shape))
		for i, size := range t.Shape {
			d.shape[i] = C.int64_t(size)
		}
		if t.Strides != nil && len(t.Strides) == len(t.Shape) {
			d.has_strides = 1
			for i, stride := range t.Strides {
				d.strides[i] = C.int64_t(stride)
			}
		}
	}
	return s
}

// host is the tensor's Go data as bytes with its DLPack dtype, or nil for a pointer tensor.
func (t *Tensor) host() ([]byte, C.uint8_t, C.uint8_t) {
	switch {
	case t.Data != nil:
		if len(t.Data) == 0 {
			return []byte{}, 2, 32
		}
		return unsafe.Slice((*byte)(unsafe.Pointer(&t.Data[0])), 4*len(t.Data)), 2, 32
	case t.Bytes != nil:
		return t.Bytes, 1, 8
	}
	return nil, 0, 0
}

func stagedDesc(s stagedTensor) uintptr { return uintptr(unsafe.Pointer(s.cdesc)) }

// releaseStaged copies an output back into its Go slice and frees the C memory.
func releaseStaged(s stagedTensor) {
	if s.cdesc == nil {
		return
	}
	if s.cdata != nil {
		if host, _, _ := s.tensor.host(); s.tensor.Output && len(host) > 0 {
			copy(host, unsafe.Slice((*byte)(s.cdata), len(host)))
			atomic.AddUint64(&stagedBytes, uint64(len(host)))
		}
		C.free(s.cdata)
	}
	C.free(unsafe.Pointer(s.cdesc))
}
%}

%include "attnkit.i"
