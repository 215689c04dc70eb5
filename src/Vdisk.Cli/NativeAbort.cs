using System.Runtime.InteropServices;

namespace Vdisk.Cli;

/// <summary>qemu-io's "abort" calls abort(3); doing the same gives the same exit status (134, SIGABRT) and no cleanup.</summary>
internal static partial class NativeAbort
{
    public static void Abort()
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            try { abort(); }
            catch (DllNotFoundException) { }
            catch (EntryPointNotFoundException) { }
        }
        Environment.Exit(134);
    }

    [LibraryImport("libc", EntryPoint = "abort")]
    private static partial void abort();
}
