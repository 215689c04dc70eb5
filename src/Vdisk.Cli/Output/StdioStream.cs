using System.Runtime.InteropServices;

namespace Vdisk.Cli.Output;

/// <summary>
/// Standard input, output or error as a plain file descriptor, read and written with read(2)/write(2).
/// <see cref="Console.OpenStandardOutput()"/> would do, except that on Unix its first write initialises the terminal
/// for the runtime's line editor, which sends "keypad transmit" (ESC [ ? 1 h ESC =) to a terminal before the first
/// byte of output: qemu-img prints nothing of the kind. Like the console stream, a closed pipe (EPIPE) ends output
/// silently, so that `vdisk map | head` is not an error.
/// </summary>
internal sealed partial class StdioStream(int fd) : Stream
{
    private const int EINTR = 4, EAGAIN = 11;
    private bool _broken;

    public static StdioStream Input => new(0);
    public static StdioStream Output => new(1);
    public static StdioStream Error => new(2);

    public override bool CanRead => fd == 0;
    public override bool CanWrite => fd != 0;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override unsafe int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty) return 0;
        fixed (byte* p = buffer)
        {
            while (true)
            {
                nint n = read(fd, p, buffer.Length);
                if (n >= 0) return (int)n;
                int errno = Marshal.GetLastPInvokeError();
                if (errno == EAGAIN) Thread.Sleep(1); // a non-blocking descriptor someone else set up: wait, do not spin
                else if (errno != EINTR) throw new IOException($"read: {Marshal.GetPInvokeErrorMessage(errno)}", errno);
            }
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override unsafe void Write(ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            int done = 0;
            while (done < buffer.Length && !_broken)
            {
                nint n = write(fd, p + done, buffer.Length - done);
                if (n >= 0) { done += (int)n; continue; }
                int errno = Marshal.GetLastPInvokeError();
                // The reader went away (EPIPE) or the output cannot take more (ENOSPC, EIO): drop the rest, as C stdio
                // does, rather than let a message about the output hide what the command did.
                if (errno == EAGAIN) Thread.Sleep(1); // a non-blocking descriptor: wait for room, do not spin
                else if (errno != EINTR) _broken = true;
            }
        }
    }

    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static unsafe partial nint read(int fd, byte* buffer, nint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial nint write(int fd, byte* buffer, nint count);
}
