using System.Buffers.Binary;
using System.Net.Sockets;
using BenchmarkDotNet.Attributes;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Bench;

/// <summary>
/// The NBD server's own cost per request: an in-process <see cref="NbdServer"/> serving a
/// <see cref="MemoryExport"/> (no disk, no engine) over a Unix socket, driven by a raw client that
/// sends <see cref="Depth"/> pipelined requests in one write and reads every reply back. What is
/// left is request parsing, dispatch, reply framing and the sends; the client reuses its buffers and
/// blocks in Send/Receive, so the allocations reported are the server's.
/// </summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 15)]
[IterationTime(250)]
public class NbdPathBenchmarks
{
    private const int Block = 4096;
    private const long ExportSize = 64L << 20;
    private const int RequestSize = 28;

    /// <summary>Requests in flight per batch: 1 (one at a time) or 32 (pipelined, as fio/nbdcopy run).</summary>
    [Params(1, 32)]
    public int Depth { get; set; }

    /// <summary>
    /// With a <see cref="System.Diagnostics.Metrics.MeterListener"/> enabling every instrument of the
    /// "Qcow2Actors.Nbd" meter (callbacks that only add up), as an exporter would; without, the
    /// instruments are idle and the request path only reads their Enabled flags.
    /// </summary>
    [Params(false, true)]
    public bool Listening { get; set; }

    private System.Diagnostics.Metrics.MeterListener? _listener;
    private long _measured;

    private string _dir = "";
    private NbdServer _server = null!;
    private Socket _client = null!;
    private byte[] _readBatch = [];
    private byte[] _writeBatch = [];
    private byte[] _replies = [];

    [GlobalSetup]
    public async Task Setup()
    {
        if (Listening)
        {
            _listener = new System.Diagnostics.Metrics.MeterListener
            {
                InstrumentPublished = (instrument, l) =>
                {
                    if (instrument.Meter.Name == "Qcow2Actors.Nbd") l.EnableMeasurementEvents(instrument);
                },
            };
            _listener.SetMeasurementEventCallback<long>((_, v, _, _) => Interlocked.Add(ref _measured, v));
            _listener.SetMeasurementEventCallback<double>((_, _, _, _) => Interlocked.Increment(ref _measured));
            _listener.Start();
        }
        _dir = Path.Combine(Path.GetTempPath(), $"q2a-bench-nbd-{Environment.ProcessId}");
        Directory.CreateDirectory(_dir);
        var export = new MemoryExport("bench", ExportSize);
        var data = new byte[1 << 20];
        new Random(7).NextBytes(data);
        for (long p = 0; p < ExportSize; p += data.Length) export.Write(p, data); // no hole replies: every read carries data
        _server = new NbdServer(NbdServerOptions.Unix([export], Path.Combine(_dir, "nbd.sock")));
        await _server.StartAsync();
        _client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _client.Connect(_server.LocalEndPoint!); // synchronous: the socket stays blocking, so the client's Send/Receive allocate nothing
        Negotiate();

        var rng = new Random(3);
        _readBatch = new byte[Depth * RequestSize];
        _writeBatch = new byte[Depth * (RequestSize + Block)];
        for (int i = 0; i < Depth; i++)
        {
            ulong offset = (ulong)rng.NextInt64(0, ExportSize / Block) * Block;
            WriteRequest(_readBatch.AsSpan(i * RequestSize), 0, (ulong)i, offset);
            var w = _writeBatch.AsSpan(i * (RequestSize + Block));
            WriteRequest(w, 1, (ulong)i, offset);
            data.AsSpan(0, Block).CopyTo(w[RequestSize..]);
        }
        _replies = new byte[Depth * (20 + 8 + Block)];
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        _client.Dispose();
        await _server.DisposeAsync();
        _listener?.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>4 KiB reads answered with structured OFFSET_DATA chunks (what libnbd and qemu negotiate).</summary>
    [Benchmark(Description = "nbd: 4K read, structured reply")]
    public void Read4K()
    {
        _client.Send(_readBatch);
        ReceiveExactly(Depth * (20 + 8 + Block));
    }

    /// <summary>4 KiB writes, each answered with a 16-byte simple reply.</summary>
    [Benchmark(Description = "nbd: 4K write, simple reply")]
    public void Write4K()
    {
        _client.Send(_writeBatch);
        ReceiveExactly(Depth * 16);
    }

    private void ReceiveExactly(int count)
    {
        int got = 0;
        while (got < count)
        {
            int n = _client.Receive(_replies, got, count - got, SocketFlags.None);
            if (n == 0) throw new InvalidOperationException("server closed the connection");
            got += n;
        }
    }

    private static void WriteRequest(Span<byte> r, ushort type, ulong handle, ulong offset)
    {
        BinaryPrimitives.WriteUInt32BigEndian(r, 0x25609513);
        BinaryPrimitives.WriteUInt16BigEndian(r[4..], 0);
        BinaryPrimitives.WriteUInt16BigEndian(r[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(r[8..], handle);
        BinaryPrimitives.WriteUInt64BigEndian(r[16..], offset);
        BinaryPrimitives.WriteUInt32BigEndian(r[24..], Block);
    }

    /// <summary>Fixed newstyle, NO_ZEROES, STRUCTURED_REPLY, then GO on the default export.</summary>
    private void Negotiate()
    {
        ReceiveInto(new byte[18]);
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, 3);
        _client.Send(flags);
        Option(8, []);
        Option(7, new byte[6]); // empty name, no info requests
    }

    private void Option(uint option, byte[] data)
    {
        var header = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(header, 0x49484156454F5054);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), (uint)data.Length);
        data.CopyTo(header, 16);
        _client.Send(header);
        while (true)
        {
            var reply = new byte[20];
            ReceiveInto(reply);
            var type = BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(12));
            ReceiveInto(new byte[BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(16))]);
            if (type == 1) return;
            if ((type & 0x80000000) != 0) throw new InvalidOperationException($"option {option} refused: 0x{type:x}");
        }
    }

    private void ReceiveInto(byte[] buffer)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n = _client.Receive(buffer, got, buffer.Length - got, SocketFlags.None);
            if (n == 0) throw new InvalidOperationException("server closed the connection");
            got += n;
        }
    }
}
