package attnkit

import (
	"errors"
	"fmt"

	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// Code is a status code, numbered like absl::StatusCode (and google.rpc.Code).
type Code int

// The status codes of attnkit_status_code.
const (
	OK                 Code = 0
	Cancelled          Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
)

var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED"}

// String returns the code's name as in the C header, e.g. "INVALID_ARGUMENT".
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE(%d)", int(c))
}

// Error is an attnkit error: the library's status (or the binding's own check) with its code.
type Error struct {
	Code    Code
	Message string
}

// Error returns the code and the message ("attnkit: INVALID_ARGUMENT: q: ...").
func (e *Error) Error() string { return "attnkit: " + e.Code.String() + ": " + e.Message }

func newError(code Code, format string, args ...interface{}) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// fromCapi turns the generated layer's status error into an *Error; nil stays nil.
func fromCapi(err error) error {
	if err == nil {
		return nil
	}
	var status *capi.Status
	if errors.As(err, &status) {
		return &Error{Code: Code(status.Code), Message: status.Message}
	}
	return &Error{Code: Unknown, Message: err.Error()}
}
