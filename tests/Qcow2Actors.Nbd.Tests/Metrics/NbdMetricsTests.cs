using System.Text;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Metrics;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests.Metrics;

/// <summary>
/// The NBD instruments count exactly what a client did: one request per command, the payload
/// bytes of successful reads and writes, one duration per answered request, errors by errno,
/// and in-flight and connection gauges that return to zero.
/// </summary>
public sealed class NbdMetricsTests
{
    private const int MiB = 1024 * 1024;
    private const uint EINVAL = 22;

    private static string UniqueName() => "metrics-" + Guid.NewGuid().ToString("N");

    [Fact]
    public async Task A_known_request_sequence_counts_each_op_and_byte_once_with_the_export_tags()
    {
        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.ExportTag, name);
        var export = new MemoryExport(name, MiB) { MetricTags = [new("tenant", "acme"), new(NbdMetrics.OpTag, "spoofed")] };
        await using var server = await TestServers.StartTcpAsync(export);
        await using (var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await c.GoAsync(name, structured: true, meta: true);
            ulong handle = 0;
            foreach (var length in new[] { 4096, 512, 65536 })
            {
                await c.SendRequestAsync(0, RawNbdClient.CmdWrite, ++handle, 8192, (uint)length, TestServers.RandomBytes(length, length));
                Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
            }
            foreach (var length in new[] { 4096, 1000 })
            {
                await c.SendRequestAsync(0, RawNbdClient.CmdRead, ++handle, 8192, (uint)length);
                var chunk = await c.ReadChunkAsync();
                Assert.Equal(1, chunk.Type); // OFFSET_DATA: the range was written
            }
            await c.SendRequestAsync(0, RawNbdClient.CmdWriteZeroes, ++handle, 0, 4096);
            Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
            await c.SendRequestAsync(0, RawNbdClient.CmdTrim, ++handle, 65536, 4096);
            Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
            await c.SendRequestAsync(0, RawNbdClient.CmdFlush, ++handle, 0, 0);
            Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
            await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, ++handle, 0, MiB);
            Assert.Equal(5, (await c.ReadChunkAsync()).Type); // BLOCK_STATUS
            // A read past the end: answered with EINVAL, counted as a read and an error, no bytes.
            await c.SendRequestAsync(0, RawNbdClient.CmdRead, ++handle, MiB, 4096);
            var error = await c.ReadChunkAsync();
            Assert.Equal(32769, error.Type); // ERROR chunk
            Assert.Equal(EINVAL, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(error.Payload));
            await c.SendRequestAsync(0, RawNbdClient.CmdDisc, ++handle, 0, 0);
        }
        await TestServers.WaitForNoConnectionsAsync(server);

        (string, string) Op(string op) => (NbdMetrics.OpTag, op);
        Assert.Equal(3, recorder.Sum(NbdMetrics.Requests, Op("write")));
        Assert.Equal(3, recorder.Sum(NbdMetrics.Requests, Op("read")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Requests, Op("write_zeroes")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Requests, Op("trim")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Requests, Op("flush")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Requests, Op("block_status")));
        Assert.Equal(10, recorder.Sum(NbdMetrics.Requests));
        Assert.Equal(4096 + 512 + 65536, recorder.Sum(NbdMetrics.Io, (NbdMetrics.DirectionTag, "write")));
        Assert.Equal(4096 + 1000, recorder.Sum(NbdMetrics.Io, (NbdMetrics.DirectionTag, "read")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Errors, Op("read"), (NbdMetrics.ErrnoTag, "EINVAL")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Errors));

        // One duration per answered request, each a plausible time; nothing left in flight or connected.
        var durations = recorder.Of(NbdMetrics.RequestDuration);
        Assert.Equal(10, durations.Count);
        Assert.All(durations, d => Assert.InRange(d.Value, 0, 60));
        Assert.Equal(3, recorder.Count(NbdMetrics.RequestDuration, Op("write")));
        Assert.Equal(10, recorder.Of(NbdMetrics.RequestsInFlight).Count(m => m.Value == 1));
        Assert.Equal(0, recorder.Sum(NbdMetrics.RequestsInFlight));
        Assert.Equal(1, recorder.Of(NbdMetrics.Connections).Count(m => m.Value == 1));
        Assert.Equal(0, recorder.Sum(NbdMetrics.Connections));

        // Every measurement carries the export's extra tag, and the server's own keys win.
        Assert.All(recorder.All, m => Assert.Equal("acme", m.Tag("tenant")));
        Assert.DoesNotContain(recorder.All, m => m.Tag(NbdMetrics.OpTag) == "spoofed");
    }

    [Fact]
    public async Task In_flight_counts_a_request_the_export_holds_and_drops_to_zero_after_its_reply()
    {
        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.ExportTag, name);
        var gate = new TaskCompletionSource();
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var export = new ScriptedExport(new MemoryExport(name, MiB))
        {
            BeforeRead = async _ =>
            {
                entered.TrySetResult();
                await gate.Task;
            },
        };
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync(name);
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, recorder.Sum(NbdMetrics.RequestsInFlight));
        Assert.Equal(0, recorder.Sum(NbdMetrics.Requests));
        gate.SetResult();
        Assert.Equal(0u, (await c.ReadSimpleReplyAsync(512)).Error);
        Assert.Equal(0, recorder.Sum(NbdMetrics.RequestsInFlight));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Requests, (NbdMetrics.OpTag, "read")));
        Assert.Equal(1, recorder.Sum(NbdMetrics.Connections));
    }

    [NbdFact]
    public async Task The_counters_equal_the_ops_and_bytes_fio_reports()
    {
        var name = UniqueName();
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.ExportTag, name);
        await using var server = await TestServers.StartTcpAsync(new MemoryExport(name, 16 * MiB));
        var r = QemuTools.Run("fio", [
            "--name=metrics", "--ioengine=nbd", $"--uri={server.GetUri(name)}",
            "--rw=randrw", "--rwmixread=40", "--bsrange=512-64k", "--iodepth=8", "--size=8m", "--io_size=6m",
            "--randseed=7", "--output-format=json",
        ], timeoutSeconds: 60);
        Assert.True(r.ExitCode == 0, r.StdErr + r.StdOut);
        await TestServers.WaitForNoConnectionsAsync(server);

        using var json = System.Text.Json.JsonDocument.Parse(r.StdOut[r.StdOut.IndexOf('{')..]);
        var job = json.RootElement.GetProperty("jobs")[0];
        long Ios(string dir) => job.GetProperty(dir).GetProperty("total_ios").GetInt64();
        long Bytes(string dir) => job.GetProperty(dir).GetProperty("io_bytes").GetInt64();
        Assert.True(Ios("read") > 0 && Ios("write") > 0, r.StdOut);
        Assert.Equal(Ios("read"), recorder.Sum(NbdMetrics.Requests, (NbdMetrics.OpTag, "read")));
        Assert.Equal(Ios("write"), recorder.Sum(NbdMetrics.Requests, (NbdMetrics.OpTag, "write")));
        Assert.Equal(Bytes("read"), recorder.Sum(NbdMetrics.Io, (NbdMetrics.DirectionTag, "read")));
        Assert.Equal(Bytes("write"), recorder.Sum(NbdMetrics.Io, (NbdMetrics.DirectionTag, "write")));
        Assert.Equal(0, recorder.Sum(NbdMetrics.Errors));
        Assert.Equal(0, recorder.Sum(NbdMetrics.RequestsInFlight));
    }

    [Fact]
    public async Task A_listener_that_throws_does_not_fail_the_requests()
    {
        var name = UniqueName();
        using var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == NbdMetrics.MeterName) l.EnableMeasurementEvents(instrument);
            },
        };
        void Throw(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var tag in tags)
                if (tag.Key == NbdMetrics.ExportTag && Equals(tag.Value, name)) throw new InvalidOperationException("listener bug");
        }
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) => Throw(tags));
        listener.SetMeasurementEventCallback<double>((_, _, tags, _) => Throw(tags));
        listener.Start();

        var export = new MemoryExport(name, MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync(name);
        var data = TestServers.RandomBytes(4096, 1);
        await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4096, data);
        Assert.Equal((0u, 1UL), ((await c.ReadSimpleReplyAsync()).Error, 1UL));
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 0, 4096);
        var read = await c.ReadSimpleReplyAsync(4096);
        Assert.Equal((0u, 2UL), (read.Error, read.Handle));
        Assert.Equal(data, read.Data);
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 3, MiB, 4096); // an error reply, recorded with its errno
        Assert.Equal(EINVAL, (await c.ReadSimpleReplyAsync()).Error);
    }

    [Fact]
    public async Task Accepted_and_refused_connections_are_counted_with_the_reason()
    {
        var name = UniqueName();
        var options = NbdServerOptions.Tcp([new MemoryExport(name, MiB)], port: 0) with { MaxConnections = 1 };
        await using var server = new NbdServer(options);
        await server.StartAsync();
        var endpoint = server.LocalEndPoint!.ToString()!;
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.EndpointTag, endpoint);

        await using (var first = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            // Asking to enter a name that is not served is a refusal; the client may try again.
            Assert.Equal(RawNbdClient.RepErrUnknown, (await first.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("nope"))).Single().Type);
            await first.GoAsync(name);
            // The server is full: the next client is closed at once.
            await using var second = await RawNbdClient.ConnectAsync(server.LocalEndPoint!, handshake: false);
            Assert.True(await second.WaitForCloseAsync());
        }
        await TestServers.WaitForNoConnectionsAsync(server);
        await using (var third = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await third.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("missing"));
            Assert.True(await third.WaitForCloseAsync());
        }

        Assert.Equal(2, recorder.Sum(NbdMetrics.ConnectionsAccepted));
        Assert.Equal(1, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "max-connections")));
        Assert.Equal(2, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "unknown-export")));
    }
}
