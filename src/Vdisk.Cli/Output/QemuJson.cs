using System.Globalization;
using System.Text;

namespace Vdisk.Cli.Output;

/// <summary>An ordered JSON object: qemu prints members in a fixed order scripts may rely on.</summary>
internal sealed class JsonObject : List<KeyValuePair<string, object>>
{
    public void Add(string key, object value) => Add(new KeyValuePair<string, object>(key, value));
}

/// <summary>
/// qemu's pretty JSON: four-space indents, "key": value, one member per line, strings escaped with \uXXXX
/// (upper-case hex) for control and non-ASCII characters. Values: string, bool, int, long, JsonObject, lists.
/// </summary>
internal static class QemuJson
{
    public static string Pretty(object value)
    {
        var sb = new StringBuilder();
        Write(sb, value, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object value, int level)
    {
        switch (value)
        {
            case string s: WriteString(sb, s); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case int i: sb.Append(i.ToString(CultureInfo.InvariantCulture)); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case JsonObject o:
                if (o.Count == 0) { sb.Append("{}"); break; }
                sb.Append("{\n");
                for (int k = 0; k < o.Count; k++)
                {
                    Indent(sb, level + 1);
                    WriteString(sb, o[k].Key);
                    sb.Append(": ");
                    Write(sb, o[k].Value, level + 1);
                    sb.Append(k + 1 < o.Count ? ",\n" : "\n");
                }
                Indent(sb, level);
                sb.Append('}');
                break;
            case System.Collections.IEnumerable list:
                var items = list.Cast<object>().ToList();
                if (items.Count == 0) { sb.Append("[]"); break; }
                sb.Append("[\n");
                for (int k = 0; k < items.Count; k++)
                {
                    Indent(sb, level + 1);
                    Write(sb, items[k], level + 1);
                    sb.Append(k + 1 < items.Count ? ",\n" : "\n");
                }
                Indent(sb, level);
                sb.Append(']');
                break;
            default:
                WriteString(sb, Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");
                break;
        }
    }

    private static void Indent(StringBuilder sb, int level) => sb.Append(' ', level * 4);

    public static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (var rune in s.EnumerateRunes())
        {
            switch (rune.Value)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case >= 0x20 and < 0x7f: sb.Append((char)rune.Value); break;
                case < 0x10000: sb.Append("\\u").Append(rune.Value.ToString("X4", CultureInfo.InvariantCulture)); break;
                default:
                    // Outside the BMP: a UTF-16 surrogate pair, each half escaped.
                    int v = rune.Value - 0x10000;
                    sb.Append("\\u").Append((0xD800 + (v >> 10)).ToString("X4", CultureInfo.InvariantCulture));
                    sb.Append("\\u").Append((0xDC00 + (v & 0x3FF)).ToString("X4", CultureInfo.InvariantCulture));
                    break;
            }
        }
        sb.Append('"');
    }
}
