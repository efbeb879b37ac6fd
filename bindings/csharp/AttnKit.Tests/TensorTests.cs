using System;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "tensor")]
    public class TensorTests
    {
        [Fact]
        public void BufferTooSmallForTheShapeIsRejected()
        {
            var data = new float[10];
            var e = Assert.Throws<ArgumentException>(() => new TensorView(data, 1, 2, 3, 2));
            Assert.Contains("addresses 12 elements", e.Message);
            Assert.Throws<ArgumentException>(() => new TensorView(data.AsSpan(), new long[] { 2, 3 }, new long[] { 8, 1 }));
            Assert.Throws<ArgumentException>(() => new TensorView(data.AsSpan(), new long[] { 2, 3 }, new long[] { 1 }));
            Assert.Throws<ArgumentException>(() => new TensorView(data.AsSpan(), new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1 }));
            Assert.Throws<ArgumentException>(() => new TensorView(data.AsSpan(), new long[] { -1 }));
        }

        [Fact]
        public void ViewsDescribeDlpackTensors()
        {
            var data = new float[24];
            var view = new TensorView(data.AsSpan(), new long[] { 2, 3, 4 }, new long[] { 1, 8, 2 });
            Assert.Equal(3, view.Rank);
            Assert.Equal(DType.Float32, view.DType);
            Assert.Equal(Device.Cpu, view.Device);
            Assert.Equal(new long[] { 1, 8, 2 }, view.Strides.ToArray());
            Assert.False(view.IsNull);
            Assert.True(TensorView.Null.IsNull);
            var empty = new TensorView(Array.Empty<float>(), 0, 4);
            Assert.False(empty.IsNull);
            var device = TensorView.FromPointer(new IntPtr(0x1000), DType.BFloat16, new long[] { 2, 2 },
                                                device: Device.Cuda, deviceId: 1);
            Assert.Equal(Device.Cuda, device.Device);
            Assert.Equal(1, device.DeviceId);
        }

        [Fact]
        public unsafe void RawPointerViewsWork()
        {
            using var session = Session.FromText(TestSupport.SessionText(layers: 1));
            float[] q = TestSupport.Random(4 * 2 * 8, 1), k = TestSupport.Random(2 * 2 * 8, 2), v = TestSupport.Random(2 * 2 * 8, 3);
            var fromArrays = new float[q.Length];
            var fromPointers = new float[q.Length];
            using (var other = Session.FromText(TestSupport.SessionText(layers: 1)))
            {
                other.Attend(0, new TensorView(q, 1, 4, 2, 8), new TensorView(k, 1, 2, 2, 8), new TensorView(v, 1, 2, 2, 8),
                             new TensorView(fromArrays, 1, 4, 2, 8));
            }
            fixed (float* qp = q, kp = k, vp = v, op = fromPointers)
            {
                session.Attend(0, TensorView.FromPointer((IntPtr)qp, DType.Float32, new long[] { 1, 4, 2, 8 }),
                               TensorView.FromPointer((IntPtr)kp, DType.Float32, new long[] { 1, 2, 2, 8 }),
                               TensorView.FromPointer((IntPtr)vp, DType.Float32, new long[] { 1, 2, 2, 8 }),
                               TensorView.FromPointer((IntPtr)op, DType.Float32, new long[] { 1, 4, 2, 8 }));
            }
            Assert.Equal(fromArrays, fromPointers);
            Assert.Contains(fromArrays, x => x != 0);
        }

        [Fact]
        public void UnsupportedDeviceIsReportedByTheLibrary()
        {
            using var session = Session.FromText(TestSupport.SessionText(layers: 1));
            var host = new float[4 * 8];
            var e = Assert.Throws<AttnKitException>(() => session.Attend(0,
                TensorView.FromPointer(new IntPtr(0x1000), DType.Float32, new long[] { 1, 4, 1, 8 }, device: (Device)7),
                new TensorView(host, 1, 2, 1, 8), new TensorView(host, 1, 2, 1, 8), new TensorView(new float[32], 1, 4, 1, 8)));
            Assert.Equal(StatusCode.InvalidArgument, e.Code);
        }
    }
}
