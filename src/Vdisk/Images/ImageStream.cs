namespace Vdisk.Images;

/// <summary>A seekable stream over a <see cref="DiskImage"/>; each call maps to one offset-based image operation.</summary>
public sealed class ImageStream : Stream
{
    private readonly DiskImage _image;
    private readonly bool _leaveOpen;
    private long _position;
    private bool _disposed;

    public ImageStream(DiskImage image, bool leaveOpen = true)
    {
        _image = image;
        _leaveOpen = leaveOpen;
    }

    public override bool CanRead => !_disposed;
    public override bool CanSeek => !_disposed;
    public override bool CanWrite => !_disposed && !_image.IsReadOnly;
    public override long Length { get { ThrowIfDisposed(); return _image.Size; } }

    public override long Position
    {
        get { ThrowIfDisposed(); return _position; }
        set
        {
            ThrowIfDisposed();
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _position = value;
        }
    }

    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    public override int Read(Span<byte> buffer)
    {
        ThrowIfDisposed();
        int n = Available(buffer.Length);
        if (n == 0) return 0;
        _image.Read(_position, buffer[..n]);
        _position += n;
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct)
    {
        ValidateBufferArguments(buffer, offset, count);
        return ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        ThrowIfDisposed();
        int n = Available(buffer.Length);
        if (n == 0) return 0;
        await _image.ReadAsync(_position, buffer[..n], ct).ConfigureAwait(false);
        _position += n;
        return n;
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        Write(buffer.AsSpan(offset, count));
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (!CheckWrite(buffer.Length)) return;
        _image.Write(_position, buffer);
        _position += buffer.Length;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct)
    {
        ValidateBufferArguments(buffer, offset, count);
        return WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default)
    {
        if (!CheckWrite(buffer.Length)) return;
        await _image.WriteAsync(_position, buffer, ct).ConfigureAwait(false);
        _position += buffer.Length;
    }

    public override void Flush()
    {
        ThrowIfDisposed();
        if (!_image.IsReadOnly) _image.Flush();
    }

    public override Task FlushAsync(CancellationToken ct)
    {
        ThrowIfDisposed();
        return _image.IsReadOnly ? Task.CompletedTask : _image.FlushAsync(ct).AsTask();
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        ThrowIfDisposed();
        long target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            SeekOrigin.End => _image.Size + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin)),
        };
        if (target < 0) throw new IOException("An attempt was made to move the position before the beginning of the stream.");
        return _position = target;
    }

    public override void SetLength(long value) =>
        throw new NotSupportedException("Resizing a disk image through its stream is not supported; resize the image instead.");

    private int Available(int wanted) => (int)Math.Clamp(_image.Size - _position, 0, wanted);

    /// <summary>Validates a write; false when there is nothing to write, which is valid at any position, as on FileStream.</summary>
    private bool CheckWrite(int count)
    {
        ThrowIfDisposed();
        if (_image.IsReadOnly) throw new NotSupportedException("The image is read-only.");
        if (count == 0) return false;
        if (_position + count > _image.Size)
            throw new NotSupportedException("Writing past the end of a disk image is not supported; resize the image first.");
        return true;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    protected override void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (disposing && !_leaveOpen) _image.Dispose();
        base.Dispose(disposing);
    }
}
