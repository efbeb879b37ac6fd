// Blittable structs and helpers that the SWIG typemaps (bindings/swig/csharp/attnkit_csharp.i) name.
// Layouts mirror bindings/swig/attnkit_swig_shim.h, which static-asserts them on the C side.
using System;
using System.Runtime.InteropServices;

namespace AttnKit.Native
{
    /// <summary>attnkit_swig_bytes: a borrowed byte range.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly struct SwigBytes
    {
        public readonly IntPtr Data;
        public readonly ulong Size;

        public SwigBytes(IntPtr data, ulong size)
        {
            Data = data;
            Size = size;
        }
    }

    /// <summary>attnkit_swig_int64s: a borrowed int64 range.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly struct SwigInt64s
    {
        public readonly IntPtr Data;
        public readonly ulong Size;

        public SwigInt64s(IntPtr data, ulong size)
        {
            Data = data;
            Size = size;
        }
    }

    /// <summary>attnkit_swig_tensor_desc: a DLTensor with inline shape and strides (168 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct TensorDesc
    {
        public const int MaxDims = 8;

        public IntPtr Data;
        public ulong ByteOffset;
        public int DeviceType;
        public int DeviceId;
        public byte DTypeCode;
        public byte DTypeBits;
        public ushort DTypeLanes;
        public int NDim;
        public int HasStrides;
        public int Reserved;
        public fixed long Shape[MaxDims];
        public fixed long Strides[MaxDims];
    }

    /// <summary>Turns a non-NULL attnkit_status* into an AttnKitException, freeing the status.</summary>
    internal static class StatusCheck
    {
        public static void ThrowIfError(IntPtr status)
        {
            if (status != IntPtr.Zero)
            {
                throw AttnKitException.FromNativeStatus(status);
            }
        }
    }

    /// <summary>Copies library-owned results into managed arrays and frees them.</summary>
    internal static class NativeBuffers
    {
        // attnkit_buffer and attnkit_int64_array are both { pointer data; size_t size; }.
        [StructLayout(LayoutKind.Sequential)]
        private readonly struct OwnedRange
        {
            public readonly IntPtr Data;
            public readonly ulong Size;
        }

        public static unsafe byte[] TakeBytes(IntPtr buffer)
        {
            if (buffer == IntPtr.Zero)
            {
                return Array.Empty<byte>();
            }
            try
            {
                var range = *(OwnedRange*)buffer;
                return new ReadOnlySpan<byte>((void*)range.Data, checked((int)range.Size)).ToArray();
            }
            finally
            {
                AttnKitNative.attnkit_buffer_free(buffer);
            }
        }

        public static unsafe long[] TakeInt64s(IntPtr array)
        {
            if (array == IntPtr.Zero)
            {
                return Array.Empty<long>();
            }
            try
            {
                var range = *(OwnedRange*)array;
                return new ReadOnlySpan<long>((void*)range.Data, checked((int)range.Size)).ToArray();
            }
            finally
            {
                AttnKitNative.attnkit_int64_array_free(array);
            }
        }

        public static unsafe long[] CopyInt64s(IntPtr data, ulong count)
        {
            return count == 0 || data == IntPtr.Zero
                ? Array.Empty<long>()
                : new ReadOnlySpan<long>((void*)data, checked((int)count)).ToArray();
        }
    }

    /// <summary>Owns one native attnkit object; frees it exactly once.</summary>
    internal sealed class NativeHandle : SafeHandle
    {
        private readonly Action<IntPtr> _free;

        public NativeHandle(IntPtr pointer, Action<IntPtr> free)
            : base(IntPtr.Zero, ownsHandle: true)
        {
            _free = free;
            SetHandle(pointer);
        }

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle()
        {
            _free(handle);
            return true;
        }

        /// <summary>Keeps the handle alive for a native call; throws ObjectDisposedException once disposed.</summary>
        public Lease Acquire(object owner)
        {
            if (IsClosed)
            {
                throw new ObjectDisposedException(owner.GetType().FullName);
            }
            return new Lease(this);
        }

        internal ref struct Lease
        {
            private readonly NativeHandle _handle;
            private bool _added;

            public Lease(NativeHandle handle)
            {
                _handle = handle;
                _added = false;
                handle.DangerousAddRef(ref _added);
                Pointer = handle.DangerousGetHandle();
            }

            public IntPtr Pointer { get; }

            public void Dispose()
            {
                if (_added)
                {
                    _added = false;
                    _handle.DangerousRelease();
                }
            }
        }
    }
}
