using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AttnKit.Native;

namespace AttnKit
{
    /// <summary>Element types a tensor may hold (DLPack codes).</summary>
    public enum DType
    {
        /// <summary>32-bit IEEE float.</summary>
        Float32,
        /// <summary>16-bit IEEE half.</summary>
        Float16,
        /// <summary>bfloat16 (the upper half of a float32).</summary>
        BFloat16,
        /// <summary>8-bit unsigned (sparse block masks).</summary>
        UInt8,
    }

    /// <summary>Where a tensor's memory lives (DLPack DLDeviceType numbering).</summary>
    public enum Device
    {
        /// <summary>Host memory.</summary>
        Cpu = 1,
        /// <summary>Memory of a CUDA device (<see cref="TensorView.DeviceId"/>).</summary>
        Cuda = 2,
    }

    /// <summary>
    /// A borrowed view of a tensor for one attnkit call: managed memory (float[], Span, Memory, which
    /// the call pins, no copy) or a raw host/device pointer, with a shape and optional strides in
    /// elements (row-major when omitted). The memory must stay valid for the call only.
    /// <c>default(TensorView)</c> is the NULL tensor of optional arguments.
    /// </summary>
    public readonly ref struct TensorView
    {
        private readonly ref byte _data;
        private readonly IntPtr _pointer;
        private readonly ReadOnlySpan<long> _shape;
        private readonly ReadOnlySpan<long> _strides;
        private readonly bool _hasStrides;
        private readonly bool _isSet;

        /// <summary>A float32 CPU tensor over <paramref name="data"/> with the given shape (row-major).</summary>
        public TensorView(float[] data, params long[] shape)
            : this(new ReadOnlySpan<float>(data ?? throw new ArgumentNullException(nameof(data))), shape, default)
        {
        }

        /// <summary>A float32 CPU tensor over <paramref name="data"/>; strides in elements, row-major if empty.</summary>
        public TensorView(Span<float> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
            : this((ReadOnlySpan<float>)data, shape, strides)
        {
        }

        /// <summary>A float32 CPU tensor over read-only memory (use it for inputs only).</summary>
        public TensorView(ReadOnlySpan<float> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
            : this(ref Unsafe.As<float, byte>(ref MemoryMarshal.GetReference(data)), data.Length, DType.Float32,
                   shape, strides)
        {
        }

        /// <summary>A float32 CPU tensor over <paramref name="data"/>.</summary>
        public TensorView(Memory<float> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
            : this((ReadOnlySpan<float>)data.Span, shape, strides)
        {
        }

        /// <summary>A float16 CPU tensor over <paramref name="data"/>.</summary>
        public TensorView(Span<Half> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
            : this(ref Unsafe.As<Half, byte>(ref MemoryMarshal.GetReference(data)), data.Length, DType.Float16,
                   shape, strides)
        {
        }

        /// <summary>A uint8 CPU tensor over <paramref name="data"/> (block masks).</summary>
        public TensorView(Span<byte> data, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides = default)
            : this(ref MemoryMarshal.GetReference(data), data.Length, DType.UInt8, shape, strides)
        {
        }

        private TensorView(ref byte data, int length, DType dtype, ReadOnlySpan<long> shape,
                           ReadOnlySpan<long> strides)
        {
            CheckShape(shape, strides);
            long needed = ElementsAddressed(shape, strides, managed: true);
            if (needed > length)
            {
                throw new ArgumentException(
                    $"tensor of shape [{string.Join(", ", shape.ToArray())}]" +
                    (strides.IsEmpty ? "" : $" with strides [{string.Join(", ", strides.ToArray())}]") +
                    $" addresses {needed} elements, but the buffer holds {length}", nameof(shape));
            }
            _data = ref data;
            _pointer = IntPtr.Zero;
            _shape = shape;
            _strides = strides;
            _hasStrides = !strides.IsEmpty;
            DType = dtype;
            Device = Device.Cpu;
            DeviceId = 0;
            ByteOffset = 0;
            _isSet = true;
        }

        private TensorView(IntPtr pointer, DType dtype, ReadOnlySpan<long> shape, ReadOnlySpan<long> strides,
                           Device device, int deviceId, long byteOffset)
        {
            CheckShape(shape, strides);
            if (byteOffset < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(byteOffset), "must not be negative");
            }
            _data = ref Unsafe.NullRef<byte>();
            _pointer = pointer;
            _shape = shape;
            _strides = strides;
            _hasStrides = !strides.IsEmpty;
            DType = dtype;
            Device = device;
            DeviceId = deviceId;
            ByteOffset = byteOffset;
            _isSet = true;
        }

        /// <summary>
        /// A tensor over memory the caller manages (host memory, or device memory such as a CUDA pointer
        /// from another library). attnkit cannot check its extent: the caller guarantees it.
        /// </summary>
        public static TensorView FromPointer(IntPtr data, DType dtype, ReadOnlySpan<long> shape,
                                             ReadOnlySpan<long> strides = default, Device device = Device.Cpu,
                                             int deviceId = 0, long byteOffset = 0)
        {
            return new TensorView(data, dtype, shape, strides, device, deviceId, byteOffset);
        }

        /// <summary>The NULL tensor (optional arguments).</summary>
        public static TensorView Null => default;

        /// <summary>True for <c>default(TensorView)</c>.</summary>
        public bool IsNull => !_isSet;

        /// <summary>The element type.</summary>
        public DType DType { get; }
        /// <summary>Where the memory lives.</summary>
        public Device Device { get; }
        /// <summary>The device's index (0 for host memory).</summary>
        public int DeviceId { get; }
        /// <summary>Bytes from the data pointer to the first element.</summary>
        public long ByteOffset { get; }
        /// <summary>The number of dimensions.</summary>
        public int Rank => _shape.Length;
        /// <summary>The extent of each dimension.</summary>
        public ReadOnlySpan<long> Shape => _shape;

        /// <summary>Strides in elements; empty for row-major.</summary>
        public ReadOnlySpan<long> Strides => _strides;

        /// <summary>For <c>fixed</c>: the managed memory (a null reference for pointer views).</summary>
        public ref byte GetPinnableReference() => ref _data;

        /// <summary>Fills the descriptor the SWIG wrapper turns into a DLTensor; <paramref name="pinned"/>
        /// is the address of this view's managed memory, pinned by the caller.</summary>
        internal unsafe TensorDesc Describe(byte* pinned)
        {
            var desc = default(TensorDesc);
            if (IsNull)
            {
                return desc;
            }
            desc.Data = _pointer != IntPtr.Zero ? _pointer : (IntPtr)pinned;
            desc.ByteOffset = (ulong)ByteOffset;
            desc.DeviceType = (int)Device;
            desc.DeviceId = DeviceId;
            (desc.DTypeCode, desc.DTypeBits) = DType switch
            {
                DType.Float32 => ((byte)2, (byte)32),
                DType.Float16 => ((byte)2, (byte)16),
                DType.BFloat16 => ((byte)4, (byte)16),
                DType.UInt8 => ((byte)1, (byte)8),
                _ => throw new ArgumentOutOfRangeException(nameof(DType)),
            };
            desc.DTypeLanes = 1;
            desc.NDim = _shape.Length;
            desc.HasStrides = _hasStrides ? 1 : 0;
            for (int i = 0; i < _shape.Length; ++i)
            {
                desc.Shape[i] = _shape[i];
                if (_hasStrides)
                {
                    desc.Strides[i] = _strides[i];
                }
            }
            return desc;
        }

        private static void CheckShape(ReadOnlySpan<long> shape, ReadOnlySpan<long> strides)
        {
            if (shape.Length > TensorDesc.MaxDims)
            {
                throw new ArgumentException($"rank {shape.Length} exceeds {TensorDesc.MaxDims}", nameof(shape));
            }
            if (!strides.IsEmpty && strides.Length != shape.Length)
            {
                throw new ArgumentException(
                    $"{strides.Length} strides given for a rank {shape.Length} shape", nameof(strides));
            }
            foreach (long size in shape)
            {
                if (size < 0)
                {
                    throw new ArgumentException("negative dimension in shape", nameof(shape));
                }
            }
        }

        // How many elements from the start a view touches: 1 + sum((size - 1) * stride), 0 when empty.
        private static long ElementsAddressed(ReadOnlySpan<long> shape, ReadOnlySpan<long> strides, bool managed)
        {
            long last = 0;
            long rowMajorStride = 1;
            for (int i = shape.Length - 1; i >= 0; --i)
            {
                if (shape[i] == 0)
                {
                    return 0;
                }
                long stride = strides.IsEmpty ? rowMajorStride : strides[i];
                if (managed && stride < 0)
                {
                    throw new ArgumentException("negative strides are not supported over managed memory",
                                                nameof(strides));
                }
                last = checked(last + (shape[i] - 1) * stride);
                rowMajorStride = checked(rowMajorStride * shape[i]);
            }
            return last + 1;
        }
    }
}
