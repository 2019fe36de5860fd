using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// A memory device that remembers every write (and punched hole, as the zeros it leaves) with the
/// number of flushes before it, so a test can rebuild every state a crash could leave behind.
/// </summary>
internal sealed class RecordingDevice(MemoryBlockDevice inner) : DelegatingDevice(inner)
{
    public List<(int Epoch, long Offset, byte[] Data)> Writes { get; } = [];
    public int Epoch { get; private set; }
    public override bool IsReadOnly => false;
    public override string Name => "recording";

    /// <summary>The bytes as they are now.</summary>
    public byte[] ToArray() => inner.ToArray();

    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        Writes.Add((Epoch, offset, buffer.ToArray()));
        return Inner.WriteAsync(buffer, offset, cancellationToken);
    }

    public override void PunchHole(long offset, long length)
    {
        Writes.Add((Epoch, offset, new byte[length]));
        Inner.PunchHole(offset, length);
    }

    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        Epoch++;
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Every state a crash can leave: all writes of earlier flush epochs, plus any one write of the
    /// current epoch, or all of them but one (writes between flushes may land in any order).
    /// </summary>
    public static IEnumerable<byte[]> CrashStates(byte[] initial, RecordingDevice recorded)
    {
        var epochs = recorded.Writes.GroupBy(w => w.Epoch).OrderBy(g => g.Key).Select(g => g.ToList()).ToList();
        var durable = new MemoryBlockDevice(initial);
        foreach (var epoch in epochs)
        {
            yield return durable.ToArray();
            for (int skip = 0; skip < epoch.Count; skip++)
            {
                var only = new MemoryBlockDevice(durable.ToArray());
                only.Write(epoch[skip].Data, epoch[skip].Offset);
                yield return only.ToArray();
                var allBut = new MemoryBlockDevice(durable.ToArray());
                for (int i = 0; i < epoch.Count; i++)
                    if (i != skip) allBut.Write(epoch[i].Data, epoch[i].Offset);
                yield return allBut.ToArray();
            }
            foreach (var w in epoch) durable.Write(w.Data, w.Offset);
        }
        yield return durable.ToArray();
    }
}
