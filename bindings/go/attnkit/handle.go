package attnkit

import "sync"

// handle owns one C object: calls are serialized (the C objects are used by one thread at a time),
// a closed handle reports FAILED_PRECONDITION, and closing twice is a no-op.
type handle struct {
	mu   sync.Mutex
	ptr  uintptr
	free func(uintptr)
	kind string
}

// use runs call with the C pointer while holding the lock.
func (h *handle) use(method string, call func(ptr uintptr) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ptr == 0 {
		return newError(FailedPrecondition, "%s.%s: the %s is closed", h.kind, method, h.kind)
	}
	return call(h.ptr)
}

func (h *handle) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ptr != 0 {
		h.free(h.ptr)
		h.ptr = 0
	}
	return nil
}

// set makes h own ptr. The owner sets a finalizer calling close, a safety net for a missing Close.
func (h *handle) set(ptr uintptr, free func(uintptr), kind string) {
	h.ptr, h.free, h.kind = ptr, free, kind
}
