using Xunit;

namespace Vdisk.Interop.Tests;

public class QemuToolsTests
{
    [Fact]
    public void QemuImgIsInstalled()
    {
        // Interop tests must never skip silently: ./test installs qemu-utils, and this fails if it could not.
        var r = Tools.Run("qemu-img", "--version");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("qemu-img version", r.StdOut);
    }
}
