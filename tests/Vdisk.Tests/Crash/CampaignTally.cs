namespace Vdisk.Tests.Crash;

/// <summary>What every campaign tallies: its failures (the first 25 kept to print) and its states by variant.</summary>
public abstract class CampaignTally
{
    public int FailureCount;
    public Dictionary<CrashVariant, int> ByVariant { get; } = new();
    public List<string> Failures { get; } = new();

    public void Fail(string what)
    {
        FailureCount++;
        if (Failures.Count < 25) Failures.Add(what);
    }

    public void CountVariant(CrashVariant variant) => ByVariant[variant] = ByVariant.GetValueOrDefault(variant) + 1;

    /// <summary>"Subset=12 SubsetTruncated=5 ...", for a summary line.</summary>
    protected string Variants => string.Join(' ', ByVariant.OrderBy(k => k.Key).Select(k => $"{k.Key}={k.Value}"));
}
