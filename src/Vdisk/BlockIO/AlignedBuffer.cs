using System.Buffers;
using System.Runtime.InteropServices;

namespace Vdisk.BlockIO;

/// <summary>Native memory aligned for O_DIRECT, exposed as <see cref="Memory{T}"/>. Dispose frees it.</summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    private byte* _pointer;
    private readonly int _length;
    private readonly bool _mapped;

    private AlignedBuffer(byte* pointer, int length, bool mapped)
    {
        _pointer = pointer;
        _length = length;
        _mapped = mapped;
    }

    public static AlignedBuffer Allocate(int length, int alignment = 4096) =>
        new((byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(length, 1), (nuint)Math.Max(alignment, sizeof(nint))), length, mapped: false);

    /// <summary>
    /// Page-aligned memory mapped straight from the kernel (on Linux), whose pages go back to the system the moment
    /// the buffer is disposed. malloc cannot promise that: once a large block has been freed, glibc raises its mmap
    /// threshold and serves blocks of that size from heaps it seldom gives back.
    /// </summary>
    public static AlignedBuffer Map(int length)
    {
        if (!OperatingSystem.IsLinux()) return Allocate(length);
        void* p = LinuxNative.mmap(null, (nuint)Math.Max(length, 1), LinuxNative.PROT_READ | LinuxNative.PROT_WRITE,
            LinuxNative.MAP_PRIVATE | LinuxNative.MAP_ANONYMOUS, -1, 0);
        if (p == (void*)-1) throw new OutOfMemoryException($"mmap of {length} bytes failed (errno {Marshal.GetLastPInvokeError()})");
        return new((byte*)p, length, mapped: true);
    }

    public int Length => _length;

    public override Span<byte> GetSpan() => new(_pointer, _length);
    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);
    public override void Unpin() { }

    protected override void Dispose(bool disposing)
    {
        if (_pointer == null) return;
        if (_mapped && OperatingSystem.IsLinux()) LinuxNative.munmap(_pointer, (nuint)Math.Max(_length, 1));
        else NativeMemory.AlignedFree(_pointer);
        _pointer = null;
    }
}
