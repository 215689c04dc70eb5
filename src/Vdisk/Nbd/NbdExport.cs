using Vdisk.Images;

namespace Vdisk.Nbd;

/// <summary>What a zero-filled WRITE becomes (qemu's detect-zeroes).</summary>
public enum DetectZeroes { Off, On, Unmap }

/// <summary>
/// One image offered under a name. Every connection to it shares the one opened <see cref="DiskImage"/>, which is
/// thread-safe, so a FLUSH on any connection makes every completed write durable: that is what makes
/// CAN_MULTI_CONN truthful.
/// </summary>
public sealed class NbdExport
{
    public NbdExport(string name, DiskImage image)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
        Image = image;
    }

    public string Name { get; }
    public DiskImage Image { get; }
    public string Description { get; init; } = "";
    /// <summary>Export read-only even if the image was opened for writing.</summary>
    public bool ReadOnlyExport { get; init; }
    /// <summary>TRIM really discards (qemu's --discard=unmap); otherwise it is accepted and does nothing.</summary>
    public bool DiscardUnmap { get; init; }
    public DetectZeroes DetectZeroes { get; init; }
    /// <summary>Advertise CAN_MULTI_CONN; qemu-nbd does so only when it serves more than one client.</summary>
    public bool MultiConn { get; init; }

    public bool IsReadOnly => ReadOnlyExport || Image.IsReadOnly;
    public long Size => Image.Size;

    /// <summary>The transmission flags; DF only means something once structured replies are on, as in qemu-nbd.</summary>
    public NbdTransmissionFlags Flags(bool structured)
    {
        var f = NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.SendFua | NbdTransmissionFlags.SendCache;
        if (IsReadOnly) f |= NbdTransmissionFlags.ReadOnly;
        else f |= NbdTransmissionFlags.SendTrim | NbdTransmissionFlags.SendWriteZeroes | NbdTransmissionFlags.SendFastZero;
        if (MultiConn) f |= NbdTransmissionFlags.CanMultiConn;
        if (structured) f |= NbdTransmissionFlags.SendDf;
        return f;
    }
}

/// <summary>Limits of a server; the defaults are qemu-nbd's where it has one.</summary>
public sealed record NbdServerOptions
{
    /// <summary>Clients served at once (qemu-nbd -e, default 1); further ones wait in the listen queue.</summary>
    public int MaxClients { get; init; } = 1;
    /// <summary>Keep serving after the last client leaves (qemu-nbd -t).</summary>
    public bool Persistent { get; init; }
    /// <summary>A client that has not finished negotiating by then is dropped (qemu-nbd's CVE-2024-7409 limit).</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Requests one connection may have in flight; the reader stops reading beyond it.</summary>
    public int MaxRequestsInFlight { get; init; } = 128;
    /// <summary>
    /// Bytes of requests and of replies not yet sent that one connection may hold at once (at least one maximal
    /// request): the reader stops reading beyond it, so a client that does not read its replies stops being read.
    /// </summary>
    public int MaxBytesInFlight { get; init; } = 64 << 20;
    /// <summary>
    /// The same for all connections together (at least one maximal request). It also caps the large buffers the
    /// server keeps for reuse: with the defaults, 8 clients that send 32 MiB requests and never read a reply keep
    /// the server's resident memory under 200 MiB.
    /// </summary>
    public int MaxTotalBytesInFlight { get; init; } = 128 << 20;
    /// <summary>TLS credentials; when set, clients must STARTTLS before anything else (qemu-nbd --tls-creds).</summary>
    public NbdTls? Tls { get; init; }
    /// <summary>
    /// Called when the last client has left and the server has unmapped the buffers it kept: the moment for a
    /// process that serves nothing else to shrink its heap (vdisk serve runs a compacting GC there).
    /// </summary>
    public Action? Idle { get; init; }
    /// <summary>Receives one line per dropped client ("Disconnect client, due to: ..."), as qemu-nbd prints on stderr.</summary>
    public Action<string>? Log { get; init; }
}
