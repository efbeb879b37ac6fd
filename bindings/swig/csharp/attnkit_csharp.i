/* C# definitions of the typemap contracts of ../attnkit.i. The generated code is internal (namespace
 * AttnKit.Native); the hand-written layer in bindings/csharp/AttnKit supplies the helper types named
 * here: StatusCheck, NativeBuffers, SwigBytes, SwigInt64s, TensorDesc and the public TensorView. */

/* Everything generated is internal; the public API is the hand-written layer. */
%pragma(csharp) moduleclassmodifiers="internal unsafe class"
%pragma(csharp) imclassclassmodifiers="internal unsafe class"
%typemap(csclassmodifiers) SWIGTYPE "internal class"
%typemap(csclassmodifiers) enum SWIGTYPE "internal enum"
%csmethodmodifiers "public unsafe";

/* The header's ABI version as a compile-time constant: the version this binding was built for. */
%csconst(1) ATTNKIT_ABI_VERSION;
%csmethodmodifiers ATTNKIT_ABI_VERSION "public";

/* size_t is 64-bit on every platform the package ships for (linux-x64). */
%include <typemaps.i>
%apply unsigned long long { size_t };
%apply unsigned long long* OUTPUT { size_t* ATTNKIT_SIZE_OUT };

/* ---- status: every fallible call; NULL = OK, otherwise AttnKitException (status freed) ---- */
%typemap(ctype) attnkit_status* "void*"
%typemap(imtype) attnkit_status* "global::System.IntPtr"
%typemap(cstype) attnkit_status* "void"
%typemap(out) attnkit_status* %{ $result = (void*)$1; %}
%typemap(csout, excode=SWIGEXCODE) attnkit_status* {
    global::AttnKit.Native.StatusCheck.ThrowIfError($imcall);$excode
  }

/* The status accessors take the raw handle. */
%typemap(ctype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "void*"
%typemap(imtype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "global::System.IntPtr"
%typemap(cstype) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "global::System.IntPtr"
%typemap(csin) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE "$csinput"
%typemap(in) attnkit_status* ATTNKIT_STATUS_HANDLE, const attnkit_status* ATTNKIT_STATUS_HANDLE %{ $1 = ($1_ltype)$input; %}

/* ---- opaque objects: raw IntPtr; SafeHandles in the hand-written layer own them ---- */
%define ATTNKIT_HANDLE(TYPE)
%typemap(ctype) TYPE*, const TYPE* "void*"
%typemap(imtype) TYPE*, const TYPE* "global::System.IntPtr"
%typemap(cstype) TYPE*, const TYPE* "global::System.IntPtr"
%typemap(csin) TYPE*, const TYPE* "$csinput"
%typemap(in) TYPE*, const TYPE* %{ $1 = ($1_ltype)$input; %}
%typemap(out) TYPE*, const TYPE* %{ $result = (void*)$1; %}
%typemap(csout, excode=SWIGEXCODE) TYPE*, const TYPE* {
    global::System.IntPtr ret = $imcall;$excode
    return ret;
  }
%enddef
%define ATTNKIT_HANDLE_OUT(TYPE)
%typemap(ctype) TYPE** out "void**"
%typemap(imtype) TYPE** out "out global::System.IntPtr"
%typemap(cstype) TYPE** out "out global::System.IntPtr"
%typemap(csin) TYPE** out "out $csinput"
%typemap(in) TYPE** out %{ $1 = ($1_ltype)$input; *$1 = NULL; %}
%enddef

/* ---- borrowed ranges: pinned for the call, no copy ---- */
%define ATTNKIT_CSHARP_RANGE(PAIR, CTYPE, CSSTRUCT, CSELEM)
%typemap(ctype) PAIR "CTYPE"
%typemap(imtype) PAIR "global::AttnKit.Native.CSSTRUCT"
%typemap(cstype) PAIR "global::System.ReadOnlySpan<CSELEM>"
%typemap(csin, pre="    fixed (CSELEM* pin_$csinput = $csinput) {\n      var range_$csinput = new global::AttnKit.Native.CSSTRUCT((global::System.IntPtr)pin_$csinput, (ulong)$csinput.Length);",
         terminator="    }") PAIR "range_$csinput"
%typemap(in) PAIR %{ $1 = ($1_ltype)$input.data; $2 = ($2_ltype)$input.size; %}
%enddef
ATTNKIT_CSHARP_RANGE((const void* ATTNKIT_BYTES, size_t ATTNKIT_BYTES_SIZE), attnkit_swig_bytes, SwigBytes, byte)
ATTNKIT_CSHARP_RANGE((const int64_t* ATTNKIT_INT64S, size_t ATTNKIT_INT64S_SIZE), attnkit_swig_int64s, SwigInt64s, long)

/* Text: a C# string, passed as UTF-8 bytes. */
%typemap(ctype) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "attnkit_swig_bytes"
%typemap(imtype) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "global::AttnKit.Native.SwigBytes"
%typemap(cstype) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "string"
%typemap(csin, pre="    byte[] utf8_$csinput = global::System.Text.Encoding.UTF8.GetBytes($csinput ?? throw new global::System.ArgumentNullException(nameof($csinput)));\n    fixed (byte* pin_$csinput = utf8_$csinput) {\n      var range_$csinput = new global::AttnKit.Native.SwigBytes((global::System.IntPtr)pin_$csinput, (ulong)utf8_$csinput.Length);",
         terminator="    }") (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) "range_$csinput"
%typemap(in) (const char* ATTNKIT_TEXT, size_t ATTNKIT_TEXT_SIZE) %{ $1 = ($1_ltype)$input.data; $2 = ($2_ltype)$input.size; %}

/* ---- library-owned results: copied into managed arrays, then freed (even when the call fails) ---- */
%define ATTNKIT_CSHARP_OWNED_OUT(TYPE, CSTYPE, TAKE)
%typemap(ctype) TYPE "void**"
%typemap(imtype) TYPE "out global::System.IntPtr"
%typemap(cstype) TYPE "out CSTYPE"
%typemap(csin, pre="    global::System.IntPtr owned_$csinput = global::System.IntPtr.Zero;",
         post="      $csinput = global::AttnKit.Native.NativeBuffers.TAKE(owned_$csinput);") TYPE "out owned_$csinput"
%typemap(in) TYPE %{ $1 = ($1_ltype)$input; *$1 = NULL; %}
%enddef
ATTNKIT_CSHARP_OWNED_OUT(attnkit_buffer** ATTNKIT_BUFFER_OUT, byte[], TakeBytes)
ATTNKIT_CSHARP_OWNED_OUT(attnkit_int64_array** ATTNKIT_INT64_ARRAY_OUT, long[], TakeInt64s)

/* A pointer into a library-owned object, read by the hand-written layer before the owner is freed. */
%typemap(ctype) const int64_t* ATTNKIT_BORROWED_INT64S "const void*"
%typemap(imtype) const int64_t* ATTNKIT_BORROWED_INT64S "global::System.IntPtr"
%typemap(cstype) const int64_t* ATTNKIT_BORROWED_INT64S "global::System.IntPtr"
%typemap(out) const int64_t* ATTNKIT_BORROWED_INT64S %{ $result = (const void*)$1; %}
%typemap(csout, excode=SWIGEXCODE) const int64_t* ATTNKIT_BORROWED_INT64S {
    global::System.IntPtr ret = $imcall;$excode
    return ret;
  }

/* ---- tensors: an AttnKit.TensorView, pinned for the call and described by a TensorDesc ---- */
%typemap(ctype) const DLTensor*, DLTensor* "const attnkit_swig_tensor_desc*"
%typemap(imtype) const DLTensor*, DLTensor* "global::System.IntPtr"
%typemap(cstype) const DLTensor*, DLTensor* "global::AttnKit.TensorView"
%typemap(csin, pre="    fixed (byte* pin_$csinput = $csinput) {\n      global::AttnKit.Native.TensorDesc desc_$csinput = $csinput.Describe(pin_$csinput);",
         terminator="    }") const DLTensor*, DLTensor* "($csinput.IsNull ? global::System.IntPtr.Zero : (global::System.IntPtr)(&desc_$csinput))"
%typemap(in) const DLTensor* (DLTensor dl_tensor) %{ $1 = attnkit_swig_tensor_from_desc($input, &dl_tensor); %}
%typemap(in) DLTensor* (DLTensor dl_tensor) %{ $1 = attnkit_swig_tensor_from_desc($input, &dl_tensor); %}

%include "attnkit.i"
