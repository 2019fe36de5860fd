using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The dirty mark that moves the backing name (a v2 header promoted, our feature names added)
/// under power cuts that tear writes at 512-byte sectors: whatever mix of old and new sectors a
/// crash leaves, cluster 0 must still parse and name the same backing file. Found by
/// <c>q2a chaos --power-loss</c>: one write of the whole new header part, torn with its first sector
/// new and the second old, left a header whose backing name offset pointed at NUL bytes.
/// </summary>
public sealed class HeaderTornWriteTests
{
    private const string BackingName = "/var/lib/images/a-backing-file-with-a-fairly-long-name.qcow2";

    [Fact]
    public void Every_torn_state_of_a_v2_dirty_mark_parses_and_names_the_backing_file()
    {
        using var dir = new TempDir();
        var path = dir.File("v2.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1024 * 1024, Version = 2, ClusterSize = 65536, BackingFile = BackingName, BackingFormat = "raw" });
        var original = File.ReadAllBytes(path);
        var device = new LoggingDevice(original);
        var block = ImageHeaderBlock.Read(original.AsSpan(0, 65536));
        Assert.True(block.EncodedLength <= 512, "precondition: the v2 header part fits in one sector");

        Assert.True(new HeaderWriter(device, block).MarkDirty());
        Assert.True(block.EncodedLength > 512, "precondition: the promoted header part spans two sectors");

        var states = 0;
        foreach (var state in CrashStates(original, device.Calls))
        {
            var parsed = ImageHeaderBlock.Read(state.AsSpan(0, 65536));
            Assert.Equal(BackingName, parsed.BackingFileName);
            states++;
        }
        Assert.True(states >= 4, $"only {states} crash states");
        // And once every call landed, the image carries the journal-pending mark.
        var final = ImageHeaderBlock.Read(device.Content.AsSpan(0, 65536));
        Assert.True(final.Header.IncompatibleFeatures.HasFlag(IncompatibleFeatures.JournalPending));
    }

    /// <summary>Every state a sector-atomic disk may hold at any instant: calls before the last flush landed, each later write's sectors each landed or not.</summary>
    private static IEnumerable<byte[]> CrashStates(byte[] original, IReadOnlyList<(long Offset, byte[]? Data)> calls)
    {
        var durable = (byte[])original.Clone();
        var pending = new List<(long Offset, byte[] Data)>();
        foreach (var (offset, data) in calls.Append((0, null)))
        {
            // A crash just before this call: every combination of the pending writes' sectors.
            var pieces = pending.SelectMany(w => Sectors(w.Offset, w.Data)).ToList();
            for (var mask = 0; mask < 1 << pieces.Count; mask++)
            {
                var state = (byte[])durable.Clone();
                for (var i = 0; i < pieces.Count; i++)
                    if ((mask & (1 << i)) != 0) pieces[i].Data.CopyTo(state, pieces[i].Offset);
                yield return state;
            }
            if (data is not null)
            {
                pending.Add((offset, data));
                continue;
            }
            foreach (var w in pending) w.Data.CopyTo(durable, w.Offset);
            pending.Clear();
        }
    }

    private static IEnumerable<(long Offset, byte[] Data)> Sectors(long offset, byte[] data)
    {
        for (var at = offset; at < offset + data.Length;)
        {
            var end = Math.Min(offset + data.Length, (at / 512 + 1) * 512);
            yield return (at, data[(int)(at - offset)..(int)(end - offset)]);
            at = end;
        }
    }

    /// <summary>An in-memory file that logs writes and flushes (a flush is logged as a null write).</summary>
    private sealed class LoggingDevice(byte[] content) : BlockDevice
    {
        private readonly MemoryBlockDevice _inner = new(content);

        public List<(long Offset, byte[]? Data)> Calls { get; } = [];

        public byte[] Content => _inner.ToArray();

        public override long Length => _inner.Length;

        public override bool IsReadOnly => false;

        public override string Name => "logging";

        public override void SetLength(long length) => _inner.SetLength(length);

        protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) =>
            _inner.ReadAsync(buffer, offset, cancellationToken);

        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            Calls.Add((offset, buffer.ToArray()));
            return _inner.WriteAsync(buffer, offset, cancellationToken);
        }

        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
        {
            Calls.Add((0, null));
            return ValueTask.CompletedTask;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
