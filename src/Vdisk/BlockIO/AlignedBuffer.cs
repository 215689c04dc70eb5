using System.Buffers;
using System.Runtime.InteropServices;

namespace Vdisk.BlockIO;

/// <summary>Native memory aligned for O_DIRECT, exposed as <see cref="Memory{T}"/>. Dispose frees it.</summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    private byte* _pointer;
    private readonly int _length;

    private AlignedBuffer(int length, int alignment)
    {
        _length = length;
        _pointer = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(length, 1), (nuint)alignment);
    }

    public static AlignedBuffer Allocate(int length, int alignment = 4096) => new(length, Math.Max(alignment, sizeof(nint)));

    public override Span<byte> GetSpan() => new(_pointer, _length);
    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);
    public override void Unpin() { }

    protected override void Dispose(bool disposing)
    {
        if (_pointer != null)
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
        }
    }
}
