package attnkit

import "github.com/attnkit/attnkit/bindings/go/internal/capi"

// HeaderABIVersion is the ABI major version this binding was generated for (ATTNKIT_ABI_VERSION).
const HeaderABIVersion = capi.ATTNKIT_ABI_VERSION

// abiErr is the result of the ABI check done when the package is initialized; every constructor
// returns it, so a mismatched libattnkit is reported as an error, never as a crash.
var abiErr = checkABI(capi.Attnkit_abi_version(), HeaderABIVersion)

// ABIVersion returns the ABI major version of the loaded libattnkit.
func ABIVersion() int { return capi.Attnkit_abi_version() }

// Version returns the loaded library's version, e.g. "0.1.0".
func Version() string { return capi.Attnkit_version_string() }

// SetNumThreads sets how many threads every computing call of the library uses from now on, in
// every goroutine: 1 to 1024, or 0 (the default) for the OpenMP default (OMP_NUM_THREADS, else one
// per core). The calling OS thread's own OpenMP setting is given back after each call. An
// INVALID_ARGUMENT *Error outside [0, 1024].
func SetNumThreads(n int) error {
	if n < -1<<31 || n > 1<<31-1 {
		return newError(InvalidArgument, "num_threads: must be in [0, 1024], got %d", n)
	}
	return fromCapi(capi.Attnkit_set_num_threads(int(int32(n))))
}

// NumThreads returns the value last given to SetNumThreads (0: the default).
func NumThreads() int { return capi.Attnkit_get_num_threads() }

// CheckABI reports whether the loaded libattnkit has the ABI this binding was built for: nil, or a
// FAILED_PRECONDITION *Error.
func CheckABI() error { return abiErr }

func checkABI(library, header int) error {
	if library != header {
		return newError(FailedPrecondition,
			"libattnkit has ABI version %d, this binding was built for version %d", library, header)
	}
	return nil
}
