using CsCheck;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The write planner on its own, against a byte-array model: one L2 table with every kind of
/// entry (unallocated, owned, shared with a snapshot, zero, preallocated zero, compressed,
/// extended with subcluster bits), optionally a shared table and a backing file. Each random
/// write, write-zeroes or discard is planned and executed on an in-memory host (allocation,
/// copy-on-write fills from what the guest reads, entries, releases), and after every step the
/// guest reads exactly the model's bytes, every entry is valid, every refcount equals the
/// references to its cluster, no cluster is freed while referenced, and no write in place lands
/// in a cluster someone else references.
/// </summary>
public sealed class WritePlannerPropertyTests
{
    private const int Clusters = 12;

    private enum Op { Write, Zero, ZeroUnmap, Discard }

    private sealed record Step(Op Op, long Offset, long Length, byte Seed, bool Fresh)
    {
        public override string ToString() => $"{Op}@{Offset}+{Length}{(Fresh ? "" : " reused")}";
    }

    private sealed record Case(int Variant, bool SharedTable, int BackingClusters, int[] Kinds, uint[] Bits, Step[] Steps)
    {
        public override string ToString() =>
            $"variant={Variant} shared={SharedTable} backing={BackingClusters} kinds=[{string.Join(",", Kinds)}] steps=[{string.Join(", ", Steps.Select(s => s.ToString()))}]";
    }

    // Variant 0: v3 standard L2, 512-byte clusters; 1: v2 standard; 2: v3 extended L2, 16 KiB clusters.
    private static (int Bits, int Version, bool Extended) Layout(int variant) => variant switch
    {
        0 => (9, 3, false),
        1 => (9, 2, false),
        _ => (14, 3, true),
    };

    private static readonly Gen<Case> Cases =
        from variant in Gen.Int[0, 2]
        from shared in Gen.Int[0, 4]
        from backing in Gen.Int[-1, Clusters]
        from kinds in Gen.Int[0, 5].Array[Clusters]
        from bits in Gen.UInt.Array[Clusters]
        from steps in GenStep(Layout(variant).Bits).Array[1, 12]
        select new Case(variant, shared == 0, backing, kinds, bits, steps);

    private static Gen<Step> GenStep(int clusterBits)
    {
        long cs = 1L << clusterBits, size = Clusters * cs, unit = clusterBits == 9 ? 512 : cs / 32;
        return from op in Gen.Enum<Op>()
               from aligned in Gen.Bool
               from start in Gen.Long[0, size - 1]
               from length in Gen.Long[1, 3 * cs]
               from seed in Gen.Byte
               from fresh in Gen.Bool
               let offset = aligned ? start / unit * unit : start
               let len = Math.Min(aligned ? Math.Max(unit, length / unit * unit) : length, size - offset)
               select new Step(op, offset, len, seed, fresh);
    }

    [Fact]
    public void Planned_writes_zeroes_and_discards_read_back_as_a_byte_array_and_keep_refcounts_exact() =>
        Cases.Sample(c => new Model(c).Run(), iter: 400, threads: 1);

    /// <summary>The in-memory host: entries, host clusters, compressed data, refcounts; executes plans as the table actor does.</summary>
    private sealed class Model
    {
        private readonly Case _case;
        private readonly ImageGeometry _g;
        private readonly WritePlanner _planner;
        private readonly long _cs;
        private readonly ulong[] _words;
        private bool _shared;
        private readonly Dictionary<long, byte[]> _host = new();
        private readonly Dictionary<long, byte[]> _compressed = new();
        private readonly Dictionary<long, int> _refcount = new();
        private readonly Dictionary<long, int> _snapshotRefs = new();
        private readonly byte[] _backing;
        private readonly byte[] _expected;
        private long _nextHost = 1;

        public Model(Case c)
        {
            _case = c;
            var (bits, version, extended) = Layout(c.Variant);
            _g = new ImageGeometry(bits, extended, false, version);
            _cs = _g.ClusterSize;
            _planner = new WritePlanner(_g, c.BackingClusters < 0 ? -1 : c.BackingClusters * _cs);
            _words = new ulong[extended ? 2 * _g.L2Entries : _g.L2Entries];
            _backing = new byte[Math.Max(0, c.BackingClusters) * _cs];
            new Random(c.Kinds.Sum()).NextBytes(_backing);
            _shared = c.SharedTable;
            for (int i = 0; i < Clusters; i++) Set(i, Initial(i));
            _expected = ReadAll();
        }

        private L2Entry Initial(int i)
        {
            int kind = _case.Kinds[i];
            uint bits = _case.Bits[i];
            bool ext = _g.ExtendedL2;
            // A shared table's data is the snapshot's too; in an owned table kind 2 is a cluster shared with a snapshot.
            switch (kind)
            {
                case 0:
                    return ext ? L2Entry.Extended(0, false, 0, bits) : default;
                case 1 or 2:
                {
                    bool sharedData = kind == 2 || _shared;
                    long host = NewCluster(fresh: false, sharedData ? 2 : 1);
                    if (sharedData) _snapshotRefs[host >> _g.ClusterBits] = 1;
                    uint alloc = ext ? bits | 1 : 0;
                    return ext ? L2Entry.Extended(host, !sharedData, alloc, ~alloc & (bits >> 7)) : L2Entry.Standard(host, !sharedData);
                }
                case 3 when _g.Version >= 3 && !ext:
                    return L2Entry.Zero();
                case 4 when _g.Version >= 3 && !ext:
                {
                    long host = NewCluster(fresh: false, _shared ? 2 : 1);
                    if (_shared) _snapshotRefs[host >> _g.ClusterBits] = 1;
                    return L2Entry.Zero(host, copied: !_shared);
                }
                case 5:
                {
                    long host = NewCluster(fresh: false, _shared ? 2 : 1);
                    if (_shared) _snapshotRefs[host >> _g.ClusterBits] = 1;
                    var data = new byte[_cs];
                    new Random(i * 31 + (int)bits).NextBytes(data);
                    _compressed[host] = data;
                    return L2Entry.Compressed(host, 100, _g.ClusterBits);
                }
                default:
                    return default;
            }
        }

        private long NewCluster(bool fresh, int refcount)
        {
            long c = _nextHost++;
            var bytes = new byte[_cs];
            // Reused space holds whatever was there: never zeros by accident.
            if (!fresh) Array.Fill(bytes, (byte)0xEE);
            _host[c] = bytes;
            _refcount[c] = refcount;
            return c << _g.ClusterBits;
        }

        private TableEntries Table => new(_words, _g.ExtendedL2, _shared);

        private void Set(int i, L2Entry e)
        {
            if (_g.ExtendedL2) { _words[2 * i] = e.Word0; _words[2 * i + 1] = e.Bitmap; }
            else _words[i] = e.Word0;
        }

        private L2Entry Get(int i) => Table[i];

        public void Run()
        {
            foreach (var step in _case.Steps)
            {
                var release = new List<long>();
                switch (step.Op)
                {
                    case Op.Write:
                    {
                        var data = Enumerable.Range(0, (int)step.Length).Select(k => (byte)(step.Seed + k * 7 + 1)).ToArray();
                        Write(step.Offset, data, step.Fresh, release);
                        Commit(release);
                        data.CopyTo(_expected, step.Offset);
                        break;
                    }
                    case Op.Zero or Op.ZeroUnmap:
                        foreach (var chunk in _planner.PlanZero(step.Offset, step.Length))
                        {
                            var d = chunk.ByMetadata ? _planner.PlanZeroCluster(Table, chunk.ClusterStart, chunk.From, chunk.To, step.Op == Op.ZeroUnmap) : default;
                            if (!chunk.ByMetadata || d.Kind == ZeroDecisionKind.WriteData)
                            {
                                Write(chunk.From, new byte[chunk.To - chunk.From], step.Fresh, release);
                            }
                            else if (d.Kind == ZeroDecisionKind.Set)
                            {
                                EnsureWritable();
                                Apply(d.Change, release);
                            }
                            Commit(release);
                        }
                        Array.Clear(_expected, (int)step.Offset, (int)step.Length);
                        break;
                    case Op.Discard:
                        foreach (var change in _planner.PlanDiscard(Table, step.Offset, step.Length))
                        {
                            EnsureWritable();
                            Apply(change, release);
                        }
                        Commit(release);
                        for (long c = (step.Offset + _cs - 1) & ~(_cs - 1); c + _cs <= step.Offset + step.Length; c += _cs)
                        {
                            // v3 says "zeros"; v2 cannot, and shows the backing file again.
                            var unallocated = _g.Version >= 3 ? new byte[_cs] : BackingBytes(c, _cs);
                            unallocated.CopyTo(_expected, c);
                        }
                        break;
                }
                Check(step);
            }
        }

        private void EnsureWritable()
        {
            if (!_shared) return;
            var copies = _planner.CopiedTableEntries(Table, _g.L2Entries);
            _shared = false;
            foreach (var change in copies) Set(change.Index, change.Entry);
        }

        private void Apply(EntryChange change, List<long> release)
        {
            release.AddRange(change.Release);
            Set(change.Index, change.Entry);
        }

        private void Commit(List<long> release)
        {
            foreach (var c in release)
            {
                int next = _refcount[c] - 1;
                Assert.True(next >= 0, $"cluster {c} released below zero");
                _refcount[c] = next;
                if (next > 0) continue;
                Assert.False(References().ContainsKey(c), $"cluster {c} freed while an entry references it");
                // A freed cluster's bytes are gone (punched or reused): a stale mapping would read junk.
                Array.Fill(_host[c], (byte)0xDD);
                _compressed.Remove(c << _g.ClusterBits);
            }
            release.Clear();
        }

        private void Write(long offset, byte[] data, bool fresh, List<long> release)
        {
            foreach (var step in _planner.PlanWrite(Table, offset, offset + data.Length))
            {
                var slice = data.AsSpan((int)(step.From - offset), (int)(step.To - step.From));
                switch (step.Kind)
                {
                    case WriteStepKind.InPlace:
                        AssertOwned(step.Host);
                        WriteHost(step.Host, slice);
                        break;
                    case WriteStepKind.Subclusters:
                    {
                        long sc = _g.SubclusterSize;
                        long s = step.From & ~(sc - 1), t = (step.To + sc - 1) & ~(sc - 1);
                        var part = Read(s, t - s);
                        slice.CopyTo(part.AsSpan((int)(step.From - s)));
                        AssertOwned(step.Host);
                        WriteHost(step.Host + (s - step.ClusterStart), part);
                        EnsureWritable();
                        Set(step.Index, step.NewEntry!.Value);
                        break;
                    }
                    case WriteStepKind.ReuseZeroAllocated:
                    {
                        var buf = new byte[_cs];
                        slice.CopyTo(buf.AsSpan((int)(step.From - step.ClusterStart)));
                        AssertOwned(step.Host);
                        WriteHost(step.Host, buf);
                        EnsureWritable();
                        Set(step.Index, step.NewEntry!.Value);
                        break;
                    }
                    case WriteStepKind.Allocate:
                    {
                        EnsureWritable();
                        long host = NewCluster(fresh, 1);
                        for (int k = 1; k < step.Count; k++) NewCluster(fresh, 1);
                        Fill(_planner.PlanFill(Table, step.ClusterStart, step.Count, step.From, step.To, fresh), host, step.ClusterStart, step.From, slice);
                        foreach (var change in _planner.MapAllocated(Table, step.ClusterStart, step.Count, step.From, step.To, host))
                            Apply(change, release);
                        break;
                    }
                    default:
                        throw new InvalidOperationException($"no external data file here, yet {step.Kind}");
                }
            }
        }

        private void Fill(FillPlan fill, long host, long runStart, long dataStart, ReadOnlySpan<byte> data)
        {
            switch (fill.Kind)
            {
                case FillKind.DataOnly:
                    WriteHost(host + (dataStart - runStart), data);
                    return;
                case FillKind.Subclusters:
                {
                    var part = Read(fill.From, fill.To - fill.From);
                    data.CopyTo(part.AsSpan((int)(dataStart - fill.From)));
                    WriteHost(host + (fill.From - runStart), part);
                    return;
                }
            }
            long runBytes = fill.To - fill.From;
            var buffer = Enumerable.Repeat((byte)0xAB, (int)runBytes).ToArray(); // a rented buffer holds anything
            if (fill.HeadPartial) (fill.HeadZero ? new byte[_cs] : Read(runStart, _cs)).CopyTo(buffer, 0);
            if (fill.TailPartial && (runBytes > _cs || !fill.HeadPartial))
                (fill.TailZero ? new byte[_cs] : Read(runStart + runBytes - _cs, _cs)).CopyTo(buffer, runBytes - _cs);
            data.CopyTo(buffer.AsSpan((int)(dataStart - runStart)));
            WriteHost(host, buffer);
        }

        private void AssertOwned(long hostOffset)
        {
            long c = hostOffset >> _g.ClusterBits;
            Assert.True(_refcount[c] == 1 && !_snapshotRefs.ContainsKey(c), $"write in place to cluster {c}, which is shared (refcount {_refcount[c]})");
        }

        /// <summary>Writes host bytes; a run of allocated clusters is consecutive, so a write may cross clusters.</summary>
        private void WriteHost(long hostOffset, ReadOnlySpan<byte> bytes)
        {
            for (int done = 0; done < bytes.Length;)
            {
                long at = hostOffset + done;
                int within = (int)(at & (_cs - 1));
                int n = (int)Math.Min(_cs - within, bytes.Length - done);
                bytes.Slice(done, n).CopyTo(_host[at >> _g.ClusterBits].AsSpan(within, n));
                done += n;
            }
        }

        private byte[] BackingBytes(long guest, long length)
        {
            var bytes = new byte[length];
            if (guest < _backing.Length) _backing.AsSpan((int)guest, (int)Math.Min(length, _backing.Length - guest)).CopyTo(bytes);
            return bytes;
        }

        private byte[] Read(long guest, long length)
        {
            var bytes = new byte[length];
            for (long pos = guest; pos < guest + length;)
            {
                long clusterStart = pos & ~(_cs - 1);
                long unit = _g.SubclusterSize;
                long end = Math.Min(guest + length, (pos & ~(unit - 1)) + unit);
                ReadUnit(Get(_g.L2Index(pos)), clusterStart, pos, end).CopyTo(bytes, pos - guest);
                pos = end;
            }
            return bytes;
        }

        private byte[] ReadUnit(L2Entry e, long clusterStart, long from, long to)
        {
            int within = (int)(from - clusterStart), n = (int)(to - from);
            var kind = e.GetKind(_g.Version, _g.ExtendedL2);
            if (kind == L2EntryKind.Compressed) return _compressed[e.CompressedHostOffset(_g.ClusterBits)].AsSpan(within, n).ToArray();
            if (_g.ExtendedL2)
            {
                var state = e.GetSubcluster(within / (int)_g.SubclusterSize);
                return state switch
                {
                    SubclusterState.Allocated => _host[e.HostOffset >> _g.ClusterBits].AsSpan(within, n).ToArray(),
                    SubclusterState.Zero => new byte[n],
                    SubclusterState.Unallocated => BackingBytes(from, n),
                    _ => throw new InvalidOperationException($"entry {e} reads as {state}"),
                };
            }
            return kind switch
            {
                L2EntryKind.Normal => _host[e.HostOffset >> _g.ClusterBits].AsSpan(within, n).ToArray(),
                L2EntryKind.ZeroPlain or L2EntryKind.ZeroAllocated => new byte[n],
                _ => BackingBytes(from, n),
            };
        }

        private byte[] ReadAll() => Read(0, Clusters * _cs);

        private Dictionary<long, int> References()
        {
            var refs = new Dictionary<long, int>(_snapshotRefs);
            for (int i = 0; i < _g.L2Entries; i++)
                foreach (var c in _planner.HostClusters(Get(i)))
                    refs[c] = refs.GetValueOrDefault(c) + 1;
            return refs;
        }

        private void Check(Step step)
        {
            var actual = ReadAll();
            int diff = actual.AsSpan().CommonPrefixLength(_expected);
            Assert.True(diff == actual.Length, $"after {step}: guest byte {diff} reads {(diff < actual.Length ? actual[diff] : 0):X2}, the model says {(diff < actual.Length ? _expected[diff] : 0):X2}");
            for (int i = 0; i < _g.L2Entries; i++)
                Assert.True(Get(i).Validate(_g.ClusterBits, _g.ExtendedL2, _g.Version) is null, $"after {step}: entry {i} ({Get(i)}) is invalid: {Get(i).Validate(_g.ClusterBits, _g.ExtendedL2, _g.Version)}");
            var refs = References();
            foreach (var (c, count) in _refcount)
                Assert.True(count == refs.GetValueOrDefault(c), $"after {step}: cluster {c} has refcount {count} but {refs.GetValueOrDefault(c)} references");
            foreach (var (i, entry) in Enumerable.Range(0, _g.L2Entries).Select(i => (i, Get(i))))
                if (entry.IsCopied && entry.HostOffset != 0)
                    Assert.True(_refcount[entry.HostOffset >> _g.ClusterBits] == 1, $"after {step}: entry {i} says COPIED over a shared cluster");
        }
    }
}
