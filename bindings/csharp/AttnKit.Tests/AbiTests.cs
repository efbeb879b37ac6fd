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
        public void StatusCodesAreNumberedLikeAbsl()
        {
            Assert.Equal(3, (int)StatusCode.InvalidArgument);
            Assert.Equal(9, (int)StatusCode.FailedPrecondition);
            Assert.Equal(16, (int)StatusCode.Unauthenticated);
            Assert.Equal((int)attnkit_status_code.ATTNKIT_DATA_LOSS, (int)StatusCode.DataLoss);
        }
    }
}
