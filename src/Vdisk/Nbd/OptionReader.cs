using System.Buffers.Binary;
using System.Text;

namespace Vdisk.Nbd;

/// <summary>Reads the fields of one option's payload, refusing anything that runs past its end instead of trusting a length.</summary>
internal struct OptionReader(byte[] data)
{
    private int _at;

    public readonly int Remaining => data.Length - _at;

    public bool TryReadUInt16(out ushort value)
    {
        value = 0;
        if (Remaining < 2) return false;
        value = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(_at));
        _at += 2;
        return true;
    }

    public bool TryReadUInt32(out uint value)
    {
        value = 0;
        if (Remaining < 4) return false;
        value = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(_at));
        _at += 4;
        return true;
    }

    /// <summary>A u32 length and that many bytes of UTF-8; names over 4096 bytes are refused, as qemu-nbd does.</summary>
    public bool TryReadString(out string value, out string problem)
    {
        value = "";
        problem = "Truncated option data";
        if (!TryReadUInt32(out uint length)) return false;
        if (length > NbdProtocol.MaxStringLength)
        {
            problem = $"Invalid name length: {length}";
            return false;
        }
        if (length > Remaining) return false;
        value = Encoding.UTF8.GetString(data, _at, (int)length);
        _at += (int)length;
        problem = "";
        return true;
    }
}
