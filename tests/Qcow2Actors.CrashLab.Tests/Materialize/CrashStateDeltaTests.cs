using Qcow2Actors.CrashLab.Materialize;
using Qcow2Actors.CrashLab.States;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.CrashLab.Tests.Materialize;

public sealed class CrashStateDeltaTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("q2a-delta-").FullName;
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    // An image whose snapshot "base" holds 0x11 in its first 64 KiB (and in the other extents given), with
    // different live data after it.
    private async Task<string> ImageWithSnapshotAsync(long size, params long[] moreBaseData)
    {
        var path = Path.Combine(_dir, "img.qcow2");
        await using (var image = await _host.CreateAsync(path, new Qcow2CreateOptions { Size = size }))
        {
            foreach (var at in moreBaseData.Prepend(0))
                await image.WriteAsync(at, Enumerable.Repeat((byte)0x11, 65536).ToArray());
            await image.CreateSnapshotAsync("base");
            await image.WriteAsync(0, Enumerable.Repeat((byte)0x99, 65536).ToArray());
        }

        return path;
    }

    private Task<(CrashStateSpace Space, CrashBase Base)> SetUpAsync(Action<CrashLogWriter> workload) => SetUpAsync(1 << 20, workload);

    private async Task<(CrashStateSpace Space, CrashBase Base)> SetUpAsync(long size, Action<CrashLogWriter> workload, params long[] moreBaseData)
    {
        var image = await ImageWithSnapshotAsync(size, moreBaseData);
        var logPath = Path.Combine(_dir, "rec.log");
        await using (var writer = CrashLogWriter.Create(logPath, new CrashLogHeader(image, "base", size, DateTimeOffset.UnixEpoch)))
            workload(writer);
        var space = CrashStateSpace.Build(CrashLogReader.Read(logPath), 512);
        var baseImage = await CrashBase.ExtractAsync(_host, space.Log.Header, Path.Combine(_dir, "base.raw"));
        return (space, baseImage);
    }

    [Fact]
    public async Task The_base_is_the_snapshot_not_the_live_image()
    {
        var (_, baseImage) = await SetUpAsync(_ => { });
        using (baseImage)
        {
            var bytes = new byte[65536];
            baseImage.Read(0, bytes);
            Assert.All(bytes, b => Assert.Equal(0x11, b));
        }
    }

    [Fact]
    public async Task Only_sectors_that_differ_from_the_base_are_in_the_delta()
    {
        var (space, baseImage) = await SetUpAsync(w =>
        {
            // Rewrites base bytes unchanged in its first sector, changes the second.
            var data = new byte[1024];
            data.AsSpan(0, 512).Fill(0x11);
            data.AsSpan(512).Fill(0x22);
            w.Complete(w.BeginWrite(0, data, fua: false), ok: true);
            w.Complete(w.BeginWriteZeroes(8192, 512, mayUnmap: false, fua: false), ok: true);
            w.Complete(w.BeginFlush(), ok: true);
        });
        using (baseImage)
        {
            var runs = CrashStateDelta.Build(space.Resolve($"p{space.Points.Count - 1}x0"), baseImage).Runs.ToList();

            Assert.Equal([512L, 8192L], runs.Select(r => r.Offset));
            Assert.All(runs, r => Assert.Equal(512, r.Data.Length));
            Assert.All(runs[0].Data, b => Assert.Equal(0x22, b));
            Assert.All(runs[1].Data, b => Assert.Equal(0, b));
        }
    }

    [Fact]
    public async Task Zeroing_the_whole_disk_clears_written_and_base_data_and_leaves_zero_base_alone()
    {
        var (space, baseImage) = await SetUpAsync(w =>
        {
            var data = new byte[512];
            data.AsSpan().Fill(0x44);
            w.Complete(w.BeginWrite(200_704, data, fua: false), ok: true);
            w.Complete(w.BeginTrim(0, 1 << 20, fua: false), ok: true);
            w.Complete(w.BeginWrite(300_032, data, fua: false), ok: true);
            w.Complete(w.BeginFlush(), ok: true);
        });
        using (baseImage)
        {
            var runs = CrashStateDelta.Build(space.Resolve($"p{space.Points.Count - 1}x0"), baseImage).Runs.ToList();

            // The base's 0x11 first 64 KiB now zero; the write before the trim gone; the one after it there.
            Assert.Equal([0L, 300_032], runs.Select(r => r.Offset));
            Assert.Equal(65536, runs[0].Data.Length);
            Assert.All(runs[0].Data, b => Assert.Equal(0, b));
            Assert.All(runs[1].Data, b => Assert.Equal(0x44, b));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task Random_unaligned_writes_zeroes_and_trims_give_deltas_that_rebuild_every_state_exactly_from_changed_sectors_only(int seed)
    {
        // A disk over three 1 MiB blocks (runs are cut at 1 MiB), base data in several extents, operations up to
        // 2.5 MiB long, some running past the end; flushes now and then and writes after the last, so states
        // before a flush drop and tear volatile writes.
        const long size = (3 << 20) + 4608;
        var random = new Random(seed);
        var operations = Enumerable.Range(0, 60).Select(_ =>
        {
            var offset = (long)random.Next((int)size);
            var length = random.Next(1, random.Next(3) == 0 ? 2_500_000 : 5000);
            return (Kind: random.Next(5), Offset: offset, Length: length, Fill: (byte)random.Next(1, 256));
        }).ToList();
        var (space, baseImage) = await SetUpAsync(size, w =>
        {
            for (var i = 0; i < operations.Count; i++)
            {
                var op = operations[i];
                var id = op.Kind switch
                {
                    0 or 1 => w.BeginWrite(op.Offset, Enumerable.Range(0, op.Length).Select(n => (byte)(op.Fill + n % 7)).ToArray(), fua: false),
                    2 => w.BeginWriteZeroes(op.Offset, op.Length, mayUnmap: false, fua: false),
                    3 => w.BeginTrim(op.Offset, op.Length, fua: false),
                    _ => w.BeginFlush(),
                };
                w.Complete(id, ok: true);
            }
        }, 1 << 20, (2 << 20) + 65536, size - 65536);
        using (baseImage)
        {
            var before = new byte[size];
            baseImage.Read(0, before);
            var states = space.Points.SelectMany(p => new[] { space.Sampled(p, seed), space.Sampled(p, seed + 100) }).ToList();
            Assert.Contains(states, s => s.Torn.Any());
            foreach (var state in states)
            {
                // The state as CrashState.Applied says it is, byte by byte.
                var model = (byte[])before.Clone();
                foreach (var (operation, offset, length) in state.Applied())
                {
                    var count = (int)Math.Min(length, size - offset);
                    if (count <= 0) continue;
                    if (operation.Kind == CrashLogRecordKind.Write)
                        operation.Data.Span.Slice((int)(offset - operation.Offset), count).CopyTo(model.AsSpan((int)offset));
                    else
                        model.AsSpan((int)offset, count).Clear();
                }

                var rebuilt = (byte[])before.Clone();
                foreach (var (offset, data) in CrashStateDelta.Build(state, baseImage).Runs)
                {
                    Assert.Equal(0, offset % CrashStateDelta.SectorSize);
                    Assert.Equal(0, data.Length % CrashStateDelta.SectorSize);
                    Assert.InRange(data.Length, CrashStateDelta.SectorSize, 1 << 20);
                    for (var at = 0; at < data.Length; at += CrashStateDelta.SectorSize)
                        Assert.False(data.AsSpan(at, CrashStateDelta.SectorSize).SequenceEqual(before.AsSpan((int)offset + at, CrashStateDelta.SectorSize)),
                            $"{state.Id}: sector at {offset + at} is in the delta but equals the base");
                    data.CopyTo(rebuilt, offset);
                }

                Assert.True(model.AsSpan().SequenceEqual(rebuilt), $"{state.Id}: the delta over the base differs from the state");
            }
        }
    }

    [QemuFact]
    public async Task A_state_written_as_an_overlay_reads_as_base_plus_its_kept_sectors_and_passes_qemu_img_check()
    {
        var (space, baseImage) = await SetUpAsync(w =>
        {
            var data = new byte[4096];
            data.AsSpan().Fill(0x33);
            w.Complete(w.BeginWrite(131072, data, fua: false), ok: true);
        });
        using (baseImage)
        {
            // Torn keeping the first 3 of 8 sectors (digit 2 + 2 = 4 in exhaustive numbering).
            var state = space.Resolve("p0x4");
            Assert.Equal((CrashWriteFate.Torn, 3), (state.Choices[0].Fate, state.Choices[0].SectorsKept));
            var overlay = Path.Combine(_dir, "state.qcow2");
            var raw = Path.Combine(_dir, "state.raw");
            var standalone = Path.Combine(_dir, "standalone.qcow2");
            var delta = CrashStateDelta.Build(state, baseImage);
            await CrashStateWriter.WriteAsync(_host, baseImage, delta, overlay, CrashStateImageFormat.Overlay);
            await CrashStateWriter.WriteAsync(_host, baseImage, delta, raw, CrashStateImageFormat.Raw);
            await CrashStateWriter.WriteAsync(_host, baseImage, delta, standalone, CrashStateImageFormat.Standalone);

            QemuTools.QemuImg("check", overlay).EnsureSuccess();
            QemuTools.QemuImg("check", standalone).EnsureSuccess();
            foreach (var (path, format) in new[] { (overlay, "qcow2"), (raw, "raw"), (standalone, "qcow2") })
            {
                QemuTools.QemuIo("-r", "-f", format, "-c", "read -P 0x11 0 65536", path).EnsureSuccess();
                QemuTools.QemuIo("-r", "-f", format, "-c", "read -P 0x33 131072 1536", path).EnsureSuccess();
                QemuTools.QemuIo("-r", "-f", format, "-c", "read -P 0 132608 2560", path).EnsureSuccess();
            }
        }
    }
}
