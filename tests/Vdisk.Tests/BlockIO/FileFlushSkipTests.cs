using Vdisk.BlockIO;
using Xunit;

namespace Vdisk.Tests.BlockIO;

/// <summary>A flush with nothing new since the last one is skipped; one after any change is not.</summary>
public class FileFlushSkipTests
{
    [Fact]
    public void FlushAfterEveryKindOfChangeReachesTheDisk()
    {
        var path = Path.Combine(Path.GetTempPath(), "vdisk-flushskip-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var d = FileBlockDevice.Create(path))
            {
                d.Write(0, new byte[] { 1, 2, 3 }.AsSpan());
                d.Flush();
                d.Flush(); // nothing new: may be skipped
                d.Write(4096, new byte[] { 9 }.AsSpan());
                d.Flush();
                d.WriteZeroes(0, 1);
                d.Flush();
                d.SetLength(8192);
                d.Flush();
            }
            var bytes = File.ReadAllBytes(path);
            Assert.Equal(8192, bytes.Length);
            Assert.Equal(new byte[] { 0, 2, 3 }, bytes[..3]);
            Assert.Equal(9, bytes[4096]);
        }
        finally { File.Delete(path); }
    }
}
