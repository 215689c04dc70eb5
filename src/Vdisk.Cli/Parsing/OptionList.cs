namespace Vdisk.Cli.Parsing;

/// <summary>
/// qemu's "-o key=value,key2=value2" lists: ",," is a literal comma, a bare "key" means "key=on",
/// and a later value for the same key replaces the earlier one but keeps the first position.
/// </summary>
internal static class OptionList
{
    public static List<KeyValuePair<string, string>> Parse(string text)
    {
        var result = new List<KeyValuePair<string, string>>();
        if (text.Length == 0) throw new CliException("Invalid option list: ");
        var items = SplitOnSingleCommas(text).ToList();
        if (items.Count > 1 && items[^1].Length == 0) items.RemoveAt(items.Count - 1); // qemu accepts a trailing comma
        foreach (var item in items)
        {
            if (item.Length == 0) throw new CliException($"Invalid option list: {text}");
            int eq = item.IndexOf('=');
            string key = eq < 0 ? item : item[..eq];
            string value = eq < 0 ? "on" : item[(eq + 1)..];
            if (key.Length == 0) throw new CliException($"Invalid option list: {text}");
            Set(result, key, value);
        }
        return result;
    }

    public static void Set(List<KeyValuePair<string, string>> list, string key, string value)
    {
        int at = list.FindIndex(p => p.Key == key);
        if (at >= 0) list[at] = new(key, value);
        else list.Add(new(key, value));
    }

    /// <summary>True for "help" or "?", which ask for the list of options instead of creating anything.</summary>
    public static bool IsHelp(string text) => text is "help" or "?";

    private static IEnumerable<string> SplitOnSingleCommas(string text)
    {
        var current = new System.Text.StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != ',')
            {
                current.Append(text[i]);
                continue;
            }
            if (i + 1 < text.Length && text[i + 1] == ',')
            {
                current.Append(',');
                i++;
                continue;
            }
            yield return current.ToString();
            current.Clear();
        }
        yield return current.ToString();
    }
}
