using AttnKit.Native;
using Xunit;

namespace AttnKit.Tests
{
    [Trait("Category", "abi")]
    public class AbiTests
    {
        [Fact]
        public void LoadedLibraryHasTheExpectedAbiVersion()
        {
            Library.EnsureLoaded();
            Assert.Equal(1, Library.ExpectedAbiVersion);
            Assert.Equal(Library.ExpectedAbiVersion, Library.AbiVersion);
            Assert.Equal(AttnKitNative.ATTNKIT_ABI_VERSION, Library.AbiVersion);
            Assert.Matches(@"^\d+\.\d+\.\d+", Library.Version);
        }

        [Fact]
        public void OtherAbiVersionIsRejectedWithAClearMessage()
        {
            Library.CheckAbiVersion(Library.ExpectedAbiVersion);  // accepted
            var e = Assert.Throws<AttnKitException>(() => Library.CheckAbiVersion(2));
            Assert.Equal(StatusCode.FailedPrecondition, e.Code);
            Assert.Contains("ABI version 2", e.Message);
            Assert.Contains("needs ABI version 1", e.Message);
            Assert.Contains("libattnkit.so.1", e.Message);
        }

        [Fact]
        public void NumThreadsIsSetReadBackAndValidated()
        {
            Assert.Equal(0, Library.NumThreads);
            try
            {
                Library.NumThreads = 1;
                Assert.Equal(1, Library.NumThreads);
                using (var session = Session.FromText(TestSupport.SessionText(layers: 1)))
                {
                    float[] q = TestSupport.Random(4 * 3 * 8, 1), kv = TestSupport.Random(2 * 3 * 8, 2);
                    var output = new float[q.Length];
                    session.Attend(0, new TensorView(q, 1, 4, 3, 8), new TensorView(kv, 1, 2, 3, 8),
                                   new TensorView(kv, 1, 2, 3, 8), new TensorView(output, 1, 4, 3, 8));
                    Assert.Contains(output, x => x != 0);
                }
                var e = Assert.Throws<AttnKitException>(() => Library.NumThreads = -1);
                Assert.Equal(StatusCode.InvalidArgument, e.Code);
                Assert.Contains("num_threads", e.Message);
                Assert.Equal(1, Library.NumThreads);
            }
            finally
            {
                Library.NumThreads = 0;
            }
            Assert.Equal(0, Library.NumThreads);
        }

        [Fact]
        public void StatusCodesAreNumberedLikeAbsl()
        {
            Assert.Equal(3, (int)StatusCode.InvalidArgument);
            Assert.Equal(9, (int)StatusCode.FailedPrecondition);
            Assert.Equal(16, (int)StatusCode.Unauthenticated);
            Assert.Equal((int)attnkit_status_code.ATTNKIT_DATA_LOSS, (int)StatusCode.DataLoss);
        }
    }
}
