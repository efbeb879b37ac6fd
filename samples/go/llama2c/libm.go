package llama2c

// libm's float functions, as samples/c/llama2c.h calls them (glibc's expf, cosf and sinf are not
// Go's float64 functions rounded to float32 for every argument). Arrays go to C in one call each,
// so cgo's cost per call is paid once per token and layer, not per element.

// #cgo LDFLAGS: -lm
// #include <math.h>
//
// static void llama2c_expf(float* x, int n) {
//   for (int i = 0; i < n; ++i) x[i] = expf(x[i]);
// }
//
// static void llama2c_cos_sinf(const float* x, float* c, float* s, int n) {
//   for (int i = 0; i < n; ++i) {
//     c[i] = cosf(x[i]);
//     s[i] = sinf(x[i]);
//   }
// }
import "C"

// powf is libm's powf.
func powf(x, y float32) float32 {
	return float32(C.powf(C.float(x), C.float(y)))
}

// expf replaces every element of x by libm's expf of it.
func expf(x []float32) {
	if len(x) > 0 {
		C.llama2c_expf((*C.float)(&x[0]), C.int(len(x)))
	}
}

// cosSinf writes libm's cosf and sinf of every element of x to cos and sin (x's length).
func cosSinf(x, cos, sin []float32) {
	if len(x) > 0 {
		C.llama2c_cos_sinf((*C.float)(&x[0]), (*C.float)(&cos[0]), (*C.float)(&sin[0]), C.int(len(x)))
	}
}
