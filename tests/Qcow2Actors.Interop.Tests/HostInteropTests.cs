using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary><c>q2a host</c> out of process, as systemd runs it: driven over its control socket, stopped with real signals.</summary>
public class HostInteropTests
{
    [QemuFact]
    public async Task Q2a_host_serves_what_the_API_adds_reloads_on_SIGHUP_and_exits_0_with_clean_images_on_SIGTERM()
    {
        using var dir = new TempDir();
        var socket = dir.File("control.sock");
        var config = dir.File("host.conf");
        await File.WriteAllTextAsync(config, "qcow2actors.host.tenants { acme { max-images = 2 } }");
        var output = new StringBuilder();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reloaded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "q2a.dll"), "host", "--config", config, "--data-dir", dir.File("data"), "--control", socket, "--port", "0" })
            psi.ArgumentList.Add(a);
        using var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        void OnLine(string? line)
        {
            if (line is null) return;
            lock (output) output.AppendLine(line);
            if (line.Contains("control API on", StringComparison.Ordinal)) started.TrySetResult();
            if (line.Contains("configuration reloaded", StringComparison.Ordinal)) reloaded.TrySetResult();
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.Exited += (_, _) => started.TrySetResult();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await started.Task.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.False(process.HasExited, $"q2a host exited: {output}");
            using var client = new HttpClient(new SocketsHttpHandler
            {
                ConnectCallback = async (_, ct) =>
                {
                    var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct);
                    return new NetworkStream(s, ownsSocket: true);
                },
            }) { BaseAddress = new Uri("http://localhost") };

            (await client.PostAsJsonAsync(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk1", Size = 32 << 20 }, HostJson.Options)).EnsureSuccessStatusCode();
            using var added = await client.PostAsJsonAsync(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk1" }, HostJson.Options);
            added.EnsureSuccessStatusCode();
            var export = (await added.Content.ReadFromJsonAsync<ExportReply>(HostJson.Options))!;
            var write = QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0x7e 0 4M", "-c", "flush");
            Assert.True(write.ExitCode == 0, write.StdErr + write.StdOut);

            await File.WriteAllTextAsync(config, "qcow2actors.host.tenants { acme { max-images = 7 } }");
            QemuTools.Run("kill", "-HUP", process.Id.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
            await reloaded.Task.WaitAsync(TimeSpan.FromSeconds(30));
            var tenant = (await client.GetFromJsonAsync<TenantReply>(Routes.TenantPath("acme"), HostJson.Options))!;
            Assert.Equal(7, tenant.MaxImages);
            Assert.False(process.HasExited);

            QemuTools.Run("kill", "-TERM", process.Id.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
            Assert.True(process.WaitForExit(60_000), $"q2a host did not exit after SIGTERM: {output}");
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {output}");
            var image = Path.Combine(dir.Path, "data", "acme", "disk1.qcow2");
            QemuTools.AssertCheckClean(image);
            var read = QemuTools.QemuIo("-f", "qcow2", "-r", image, "-c", "read -P 0x7e 0 4M");
            Assert.True(read.ExitCode == 0, read.StdErr + read.StdOut);
            Assert.False(File.Exists(socket), "the control socket is removed at exit");
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public void Q2a_host_without_a_data_dir_is_one_line_and_exit_1()
    {
        var result = QemuTools.Q2a("host", "--control", "/tmp/q2a-none/control.sock");

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("q2a: no data directory: give --data-dir DIR or qcow2actors.host.data-dir", result.StdErr.Trim());
    }
}
