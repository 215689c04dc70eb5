using System.Runtime.InteropServices;

namespace Vdisk.Formats.Qcow2.Compression;

/// <summary>
/// The system zlib, for writing only: QEMU inflates qcow2 clusters with a 4 KiB window
/// (windowBits -12) and .NET 10's DeflateStream cannot be told to stay inside one.
/// </summary>
internal static unsafe partial class ZlibNative
{
    public const string Library = "libz.so.1";

    public const int Z_OK = 0;
    public const int Z_STREAM_END = 1;
    public const int Z_BUF_ERROR = -5;
    public const int Z_FINISH = 4;
    public const int Z_DEFAULT_COMPRESSION = -1;
    public const int Z_DEFLATED = 8;
    public const int Z_DEFAULT_STRATEGY = 0;

    /// <summary>
    /// zlib's <c>z_stream</c>. The <c>uLong</c> fields are C <c>unsigned long</c> (CULong keeps them
    /// 8 bytes on LP64 Linux, 4 on Windows), which makes the struct 112 bytes on 64-bit Linux; zlib
    /// checks that size in its *Init2_ calls, so a layout mistake fails loudly with Z_VERSION_ERROR.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct ZStream
    {
        public byte* NextIn;
        public uint AvailIn;
        public CULong TotalIn;
        public byte* NextOut;
        public uint AvailOut;
        public CULong TotalOut;
        public byte* Msg;
        public void* State;
        public void* ZAlloc;
        public void* ZFree;
        public void* Opaque;
        public int DataType;
        public CULong Adler;
        public CULong Reserved;
    }

    [LibraryImport(Library)]
    public static partial byte* zlibVersion();

    [LibraryImport(Library)]
    public static partial int deflateInit2_(ZStream* strm, int level, int method, int windowBits, int memLevel, int strategy, byte* version, int streamSize);

    [LibraryImport(Library)]
    public static partial int deflate(ZStream* strm, int flush);

    [LibraryImport(Library)]
    public static partial int deflateReset(ZStream* strm);

    [LibraryImport(Library)]
    public static partial int deflateEnd(ZStream* strm);

    public static string? Message(ZStream* strm) => strm->Msg == null ? null : Marshal.PtrToStringUTF8((nint)strm->Msg);
}
