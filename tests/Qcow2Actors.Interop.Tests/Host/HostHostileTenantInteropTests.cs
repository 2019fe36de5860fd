using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;
using static Qcow2Actors.Interop.Tests.ServeHostileClientsInteropTests;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// <c>q2a host</c> out of process against a tenant whose client tries to take the NBD server from the others:
/// a thousand connections to its own export. The bound per tenant and the bound on handshakes keep it to its
/// share, the host's memory stays bounded, and another tenant's client gets in and works.
/// </summary>
public sealed class HostHostileTenantInteropTests(ITestOutputHelper output) : IDisposable
{
    private const int MiB = 1024 * 1024;
    private const uint RepAck = 1;
    private const uint RepErrPolicy = 0x80000002;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task A_tenant_opening_a_thousand_connections_gets_its_share_and_another_tenants_client_works()
    {
        var config = _dir.File("host.conf");
        await File.WriteAllTextAsync(config,
            "qcow2actors.host.nbd { max-connections = 1100, max-negotiating = 200, max-connections-per-tenant = 100, handshake-timeout = 60s }\n");
        using var host = await HostProcess.StartAsync(_dir.Path, "--config", config);
        foreach (var tenant in new[] { "acme", "globex" })
        {
            host.CtlOk("tenant", "add", tenant);
            host.CtlOk("image", "create", tenant, "disk", "64M");
            host.CtlOk("export", "add", tenant, "disk");
        }
        QemuTools.QemuIo("-f", "raw", host.Uri("acme/disk"), "-c", "write -P 0x11 0 1M").EnsureSuccess();
        QemuTools.QemuIo("-f", "raw", host.Uri("globex/disk"), "-c", "write -P 0x22 0 1M").EnsureSuccess(); // warms the paths measured
        var endPoint = new IPEndPoint(IPAddress.Loopback, host.NbdPort);
        var before = Memory(host.Pid);

        var sockets = new List<Socket>();
        try
        {
            int entered = 0, refused = 0;
            for (var i = 0; i < 1000; i++)
            {
                var socket = await ConnectAndReadHelloAsync(endPoint);
                sockets.Add(socket);
                var reply = await GoAsync(socket, "acme/disk");
                if (reply == RepAck) entered++;
                else if (reply == RepErrPolicy) refused++;
                else Assert.Fail($"NBD_OPT_GO {i} answered 0x{reply:x}");
            }
            Assert.Equal((100, 900), (entered, refused));

            // The refused ones negotiate on; newcomers beyond max-negotiating close the oldest. Another tenant's client gets in.
            QemuTools.QemuIo("-f", "raw", host.Uri("globex/disk"), "-c", "write -P 0x33 0 16M", "-c", "read -P 0x33 0 16M").EnsureSuccess();
            var during = Memory(host.Pid);
            output.WriteLine($"1,000 connections of one tenant: VmRSS {before.Rss >> 20} -> {during.Rss >> 20} MiB, peak (VmHWM) {during.Peak >> 20} MiB");
            Assert.True(during.Peak < 400L * MiB, $"the host peaked at {during.Peak >> 20} MiB with 1,000 connections");

            // The flooding tenant's admitted connections still work.
            var first = sockets[0];
            await first.SendAsync(Request(0, 7, 0, 4096));
            var data = await ReceiveExactAsync(first, 16 + 4096);
            Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(4)));
            Assert.True(data.AsSpan(16).IndexOfAnyExcept((byte)0x11) < 0, "acme's export read back wrong data");
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
        Assert.Equal(0, host.Stop());
        Assert.Contains("max-connections-per-tenant", host.Output);
        QemuTools.AssertCheckClean(host.ImagePath("globex", "disk"));
        QemuTools.QemuIo("-r", "-c", "read -P 0x33 0 16M", host.ImagePath("globex", "disk")).EnsureSuccess();
    }
}
