using System.Buffers.Binary;
using Vdisk.Images;

namespace Vdisk.Nbd;

/// <summary>What a request does to the image, and its replies.</summary>
public sealed partial class NbdConnection
{
    private (NbdError, string) Failure(NbdRequest r, Exception e)
    {
        if (e is not DiskImageException) _options.Log?.Invoke($"Request {r.Command} at {r.Offset} failed: {e}");
        return (ErrorOf(e), e.Message);
    }

    /// <summary>The error, the reply that carries data (READ, BLOCK_STATUS), or a plain success.</summary>
    private ValueTask ReplyAsync(NbdRequest r, NbdError error, string message, ReplyPieces? reply) =>
        error != NbdError.None ? ReplyErrorAsync(r, error, message)
        : reply is not null ? _out.SendAsync(reply.Pieces, _abort.Token)
        : ReplyOkAsync(r);

    /// <summary>The checks qemu-nbd makes before touching the image, with its answers (EPERM for writes to a read-only export, EINVAL otherwise).</summary>
    private (NbdError, string) Validate(NbdRequest r)
    {
        var allowed = NbdCommandFlags.Fua | r.Command switch
        {
            NbdCommand.Read when _session.Structured => NbdCommandFlags.DontFragment,
            NbdCommand.WriteZeroes => NbdCommandFlags.NoHole | NbdCommandFlags.FastZero,
            NbdCommand.BlockStatus => NbdCommandFlags.ReqOne,
            _ => 0,
        };
        if (!Enum.IsDefined(r.Command)) return (NbdError.Inval, $"unsupported command {(ushort)r.Command}");
        if ((r.Flags & ~allowed) != 0) return (NbdError.Inval, $"unsupported flags 0x{(ushort)r.Flags:x} for {r.Command}");
        if (r.Command == NbdCommand.Flush) return (NbdError.None, "");
        if (Export.IsReadOnly && r.Command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes)
            return (NbdError.Perm, "export is read-only");
        if (r.Command is NbdCommand.Read or NbdCommand.Cache && r.Length > NbdProtocol.MaxPayload)
            return (NbdError.Inval, $"len ({r.Length}) is larger than max len ({NbdProtocol.MaxPayload})");
        if (!r.FitsIn(Export.Size))
            return (NbdError.Inval, $"operation past EOF; from: {r.Offset}, len: {r.Length}, size: {Export.Size}");
        if (r.Command == NbdCommand.BlockStatus)
        {
            if (!_session.BaseAllocation) return (NbdError.Inval, "no meta context was negotiated");
            if (r.Length == 0) return (NbdError.Inval, "need non-zero length");
        }
        return (NbdError.None, "");
    }

    /// <summary>Does the work; returns the reply when it carries data (READ, BLOCK_STATUS), null for a plain success.</summary>
    private async Task<ReplyPieces?> PerformAsync(NbdRequest r, NbdBuffer? payload)
    {
        var image = Export.Image;
        long offset = (long)r.Offset, length = r.Length;
        bool fua = r.Flags.HasFlag(NbdCommandFlags.Fua);
        switch (r.Command)
        {
            case NbdCommand.Read:
                return _session.Structured
                    ? await StructuredReadAsync(r).ConfigureAwait(false)
                    : await SimpleReadAsync(r).ConfigureAwait(false);
            case NbdCommand.BlockStatus:
                return await BlockStatusAsync(r).ConfigureAwait(false);
            case NbdCommand.Write:
                var data = payload!.Value.Memory;
                if (Export.DetectZeroes != DetectZeroes.Off && !data.Span.ContainsAnyExcept((byte)0))
                    await image.WriteZeroesAsync(offset, length, Export.DetectZeroes == DetectZeroes.Unmap && Export.DiscardUnmap).ConfigureAwait(false);
                else
                    await image.WriteAsync(offset, data).ConfigureAwait(false);
                break;
            case NbdCommand.WriteZeroes:
                await WriteZeroesAsync(r).ConfigureAwait(false);
                break;
            case NbdCommand.Trim:
                // TRIM leaves the contents unspecified, so with --discard=ignore doing nothing is a correct TRIM.
                if (Export.DiscardUnmap) await image.DiscardAsync(offset, length).ConfigureAwait(false);
                break;
            case NbdCommand.Flush:
                await image.FlushAsync().ConfigureAwait(false);
                break;
            case NbdCommand.Cache:
                await PrefetchAsync(offset, length).ConfigureAwait(false);
                break;
        }
        if (fua && r.Command is NbdCommand.Write or NbdCommand.WriteZeroes or NbdCommand.Trim)
            await image.FlushAsync().ConfigureAwait(false);
        return null;
    }

    private async Task WriteZeroesAsync(NbdRequest r)
    {
        long offset = (long)r.Offset, length = r.Length;
        bool noHole = r.Flags.HasFlag(NbdCommandFlags.NoHole);
        if (r.Flags.HasFlag(NbdCommandFlags.FastZero))
        {
            // A range that already reads as zeros needs nothing at all, unless the client wants it allocated.
            if (!noHole && await ReadsAsZeroesAsync(offset, length).ConfigureAwait(false)) return;
            if (!Export.Image.CanZeroWithoutWritingData(offset, length))
                throw new DiskImageException(DiskImageErrorKind.UnsupportedFeature, Export.Image.Path, "Zeroing this range would write data");
        }
        await Export.Image.WriteZeroesAsync(offset, length, mayUnmap: !noHole && Export.DiscardUnmap).ConfigureAwait(false);
    }

    private async Task<bool> ReadsAsZeroesAsync(long offset, long length)
    {
        for (long end = offset + length; offset < end;)
        {
            var s = await Export.Image.GetBlockStatusAsync(offset, end - offset).ConfigureAwait(false);
            if (!s.Zero) return false;
            offset += s.Length;
        }
        return true;
    }

    /// <summary>CACHE reads through a buffer of at most this size.</summary>
    private const int PrefetchChunk = 1 << 20;

    /// <summary>CACHE: read the range once so that the host page cache and the format's table caches hold it.</summary>
    private async Task PrefetchAsync(long offset, long length)
    {
        var scratch = _buffers.Rent((int)Math.Min(length, PrefetchChunk));
        try
        {
            for (long end = offset + length; offset < end;)
            {
                int n = (int)Math.Min(scratch.Length, end - offset);
                await Export.Image.ReadAsync(offset, scratch.Memory[..n]).ConfigureAwait(false);
                offset += n;
            }
        }
        finally { _buffers.Return(scratch); }
    }

    private static NbdError ErrorOf(Exception e) => e switch
    {
        DiskImageException d => FromErrno(d.Errno),
        ObjectDisposedException => NbdError.Shutdown,
        NotSupportedException => NbdError.NotSup,
        OutOfMemoryException => NbdError.NoMem,
        _ => NbdError.Io,
    };

    /// <summary>
    /// The protocol has eight error values; a host errno outside them is folded in as qemu-nbd folds it (a full disk
    /// or quota is ENOSPC, a read-only file system EPERM, anything unknown EINVAL).
    /// </summary>
    internal static NbdError FromErrno(int errno) => errno switch
    {
        HostErrno.EPERM or HostErrno.EROFS => NbdError.Perm,
        HostErrno.EIO => NbdError.Io,
        12 => NbdError.NoMem,
        HostErrno.ENOSPC or HostErrno.EDQUOT or HostErrno.EFBIG => NbdError.NoSpc,
        75 => NbdError.Overflow,
        HostErrno.ENOTSUP => NbdError.NotSup,
        108 => NbdError.Shutdown,
        _ => NbdError.Inval,
    };

    private ValueTask ReplyOkAsync(NbdRequest r)
    {
        var b = new byte[NbdReplyWriter.SimpleReplySize];
        NbdReplyWriter.EncodeSimpleReply(b, NbdError.None, r.Cookie);
        return _out.SendAsync(b, _abort.Token);
    }

    /// <summary>Once structured replies are on, qemu-nbd reports every error as an ERROR chunk (which can carry a message).</summary>
    private ValueTask ReplyErrorAsync(NbdRequest r, NbdError error, string message)
    {
        if (_session.Structured) return _out.SendAsync(NbdReplyWriter.ErrorChunk(r.Cookie, error, message), _abort.Token);
        var b = new byte[NbdReplyWriter.SimpleReplySize];
        NbdReplyWriter.EncodeSimpleReply(b, error, r.Cookie);
        return _out.SendAsync(b, _abort.Token);
    }
}
