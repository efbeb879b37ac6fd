// Package attnkit is the Go binding of attnkit: KV cache eviction, sparse prefill attention and
// visual token pruning behind libattnkit's C ABI.
//
// Objects (Session, EvictionPolicy, VisualPruner, SparseAttention) are created from typed configs
// (package attnkitpb) or textproto and released with Close, the documented path; a finalizer frees
// an object that was never closed, as a safety net only. Every call returns an error, a *Error with
// the library's Code and message (use errors.As), and never panics: a call on a closed object
// returns a FAILED_PRECONDITION *Error.
//
// Tensors are Float32Tensor (Go memory, any strides), Uint8Tensor (block masks), CFloat32Tensor (C
// memory from AllocTensor, seen from Go through a []float32) or DeviceTensor (a pointer the Go
// runtime does not manage, e.g. CUDA memory). Go memory is staged in C memory for the duration of a
// call and outputs are copied back (cgo's pointer rules; Go 1.19 has no runtime.Pinner): libattnkit
// never keeps a pointer to Go memory. C memory and device pointers are passed as they are, so a
// generation loop that keeps its q, k, v and out in AllocTensor buffers copies nothing per call.
//
// One object may be called from several goroutines; calls on one object are serialized (the C
// objects are single-threaded), calls on distinct objects run in parallel.
package attnkit
