using System.Collections.Immutable;
using Vdisk.BlockIO;

namespace Vdisk.Tests.Crash;

/// <summary>
/// Builds the crash states of one recorded file, taken in order of their durable prefix, so that each record of the
/// log is applied to the prefix once. Metadata clusters (for the metadata-only and data-only variants) are those of
/// the prefix and of the file's final state.
/// </summary>
public sealed class CrashStateBuilder
{
    private readonly ImmutableArray<DeviceRecord> _records;
    private readonly MemoryBlockDevice _prefix;
    private readonly QcowLayout _final;
    private QcowLayout? _metadata;
    private int _applied;

    public CrashStateBuilder(RecordingBlockDevice recorder, MemoryBlockDevice final)
    {
        _records = recorder.Records;
        _prefix = recorder.BuildState(0);
        _final = QcowLayout.Read(final);
    }

    public MemoryBlockDevice Build(CrashState state)
    {
        if (state.Prefix < _applied) throw new InvalidOperationException("states must come in order of their prefix");
        if (_metadata is null || _applied != state.Prefix)
        {
            for (; _applied < state.Prefix; _applied++) _records[_applied].ApplyTo(_prefix);
            _metadata = QcowLayout.Read(_prefix);
            _metadata.MetadataClusters.UnionWith(_final.MetadataClusters);
        }
        return CrashStates.Build(_records, state, _prefix, _metadata);
    }
}
