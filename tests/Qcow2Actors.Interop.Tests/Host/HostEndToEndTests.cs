using System.Globalization;
using System.Text.Json;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// Issue 9's end-to-end test: the built <c>q2a host</c> out of process on a temporary data directory,
/// control socket and NBD port, driven only through <c>q2a ctl</c> and QEMU's, libnbd's and fio's tools.
/// Each scenario starts its own host and ends with SIGTERM (exit 0) and <c>qemu-img check</c> on every
/// image it made.
/// </summary>
public sealed class HostEndToEndTests : IDisposable
{
    private const long MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static void Io(string target, string format, params string[] commands) => Io(target, format, false, commands);

    private static void Io(string target, string format, bool readOnly, params string[] commands)
    {
        var args = new List<string> { "-f", format };
        if (readOnly) args.Add("-r");
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(target);
        var r = QemuTools.Run("qemu-io", args);
        Assert.True(r.ExitCode == 0, $"qemu-io {string.Join(' ', commands)} on {target}: exit {r.ExitCode}\n{r.StdOut}{r.StdErr}");
        Assert.DoesNotContain("Pattern verification failed", r.StdOut + r.StdErr);
    }

    private static void StopCleanly(HostProcess host, params string[] images)
    {
        Assert.True(host.Stop() == 0, $"q2a host did not exit 0 on SIGTERM:\n{host.Output}");
        foreach (var image in images)
        {
            var check = QemuTools.QemuImg("check", image);
            Assert.True(check.ExitCode == 0, $"qemu-img check {image}: exit {check.ExitCode}\n{check.StdOut}{check.StdErr}");
            Assert.Contains("No errors were found on the image.", check.StdOut);
        }
    }

    private static string Fio(string uri, string rw, string extra = "") => $"""
        [global]
        ioengine=nbd
        uri={uri}
        rw={rw}
        {extra}
        [job]

        """;

    [FioFact]
    public async Task Two_tenants_six_images_and_their_exports_serve_qemu_io_fio_and_nbdcopy_and_close_clean_on_sigterm()
    {
        using var host = await HostProcess.StartAsync(_dir.Path);
        host.CtlOk("tenant", "add", "acme", "--quota", "1G", "--max-images", "4");
        host.CtlOk("tenant", "add", "globex");
        var again = host.Ctl("tenant", "add", "acme");
        Assert.Equal(1, again.ExitCode);
        Assert.Matches(@"^q2a ctl: .+ \(tenant-exists\)\n$", again.StdErr);

        (string Tenant, string Name, string Size, string? Options)[] images =
        [
            ("acme", "a1", "64M", null),
            ("acme", "a2", "64M", "cluster_size=4k"),
            ("acme", "a3", "32M", "lazy_refcounts=on"),
            ("globex", "g1", "64M", null),
            ("globex", "g2", "48M", "compat=0.10"),
            ("globex", "g3", "16M", "extended_l2=on"),
        ];
        foreach (var (tenant, name, size, options) in images)
        {
            string[] args = options is null ? ["image", "create", tenant, name, size] : ["image", "create", tenant, name, size, "-o", options];
            var created = host.CtlJson(args);
            Assert.Equal("open", created.GetProperty("state").GetString());
            Assert.Equal(host.ImagePath(tenant, name), created.GetProperty("path").GetString());
        }
        Assert.Equal(6, host.CtlJson("image", "list").GetArrayLength());
        Assert.Equal(3, host.CtlJson("image", "list", "acme").GetArrayLength());
        var tenants = host.CtlJson("tenant", "list").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!, t => t);
        Assert.Equal(3, tenants["acme"].GetProperty("images").GetInt32());
        Assert.Equal(1L << 30, tenants["acme"].GetProperty("quota").GetInt64());
        Assert.Equal(4, tenants["acme"].GetProperty("maxImages").GetInt32());
        Assert.Equal(3, tenants["globex"].GetProperty("images").GetInt32());
        var info = host.CtlJson("image", "info", "acme", "a2");
        Assert.Equal(64 * MiB, info.GetProperty("virtualSize").GetInt64());
        Assert.Equal(4096, info.GetProperty("info").GetProperty("cluster-size").GetInt32());

        foreach (var (tenant, name, _, _) in images)
        {
            string[] args = (tenant, name) switch
            {
                ("globex", "g3") => ["export", "add", tenant, name, "--read-only"],
                ("globex", "g2") => ["export", "add", tenant, name, "--name", "legacy"],
                _ => ["export", "add", tenant, name],
            };
            var export = host.CtlJson(args);
            var expected = name == "g2" ? "legacy" : $"{tenant}/{name}";
            Assert.Equal(expected, export.GetProperty("name").GetString());
            Assert.Equal(host.Uri(expected), export.GetProperty("uri").GetString());
        }
        var exportList = host.CtlOk("export", "list");
        Assert.Equal(7, exportList.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length); // header + 6
        var health = host.CtlJson("health");
        Assert.Equal("ok", health.GetProperty("status").GetString());
        Assert.Equal(2, health.GetProperty("tenants").GetInt32());
        Assert.Equal(6, health.GetProperty("images").GetInt32());
        Assert.Equal(6, health.GetProperty("exports").GetInt32());

        // qemu-io writes and reads back; the read-only export refuses a write.
        Io(host.Uri("acme/a1"), "raw", "write -P 0xa1 0 1M", "write -P 0xa2 10M 64k", "flush", "read -P 0xa1 0 1M", "read -P 0 1M 1M");
        var refused = QemuTools.QemuIo("-f", "raw", host.Uri("globex/g3"), "-c", "write -P 1 0 4k");
        Assert.NotEqual(0, refused.ExitCode);
        Io(host.Uri("globex/g3"), "raw", readOnly: true, "read -P 0 0 1M");

        // nbdcopy copies a file in; fio verifies its own writes.
        var source = _dir.File("source.raw");
        var bytes = new byte[48 * MiB];
        new Random(9).NextBytes(bytes.AsSpan(0, 8 * (int)MiB));
        await File.WriteAllBytesAsync(source, bytes);
        QemuTools.Run("nbdcopy", source, host.Uri("legacy")).EnsureSuccess();
        var fio = await FioProcess.RunAsync(_dir.File("a2.fio"),
            Fio(host.Uri("acme/a2"), "randwrite", "bsrange=4k-64k\nsize=8m\niodepth=8\nverify=crc32c\nverify_fatal=1\ndo_verify=1"), TimeSpan.FromSeconds(120));
        Assert.All(fio.Errors, e => Assert.Equal(0, e));

        // An export removed at run time is gone; its image closes, checks clean as a closed file, opens again.
        host.CtlOk("export", "remove", "acme/a3");
        Assert.NotEqual(0, QemuTools.Run("nbdinfo", host.Uri("acme/a3")).ExitCode);
        Assert.Equal("closed", host.CtlJson("image", "close", "acme", "a3").GetProperty("state").GetString());
        QemuTools.AssertCheckClean(host.ImagePath("acme", "a3"));
        Assert.Equal("open", host.CtlJson("image", "open", "acme", "a3").GetProperty("state").GetString());
        host.CtlOk("export", "add", "acme", "a3");
        Io(host.Uri("acme/a3"), "raw", "write -P 0xa3 0 64k", "read -P 0xa3 0 64k");

        StopCleanly(host, [.. images.Select(i => host.ImagePath(i.Tenant, i.Name))]);
        Io(host.ImagePath("acme", "a1"), "qcow2", "read -P 0xa1 0 1M", "read -P 0xa2 10M 64k", "read -P 0 11M 1M");
        Io(host.ImagePath("acme", "a3"), "qcow2", "read -P 0xa3 0 64k");
        var compare = QemuTools.QemuImg("compare", "-f", "raw", "-F", "qcow2", source, host.ImagePath("globex", "g2"));
        Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
    }

    [FioFact]
    public async Task Snapshots_of_a_served_image_are_taken_and_deleted_during_fio_verify_writes()
    {
        using var host = await HostProcess.StartAsync(_dir.Path);
        host.CtlOk("tenant", "add", "acme");
        host.CtlOk("image", "create", "acme", "vm", "64M");
        host.CtlOk("export", "add", "acme", "vm");
        var image = host.ImagePath("acme", "vm");

        // Writes paced at 300/s for 12 MiB of 4k blocks: about 10 s of writing to take snapshots in, enough for
        // four q2a ctl processes to start and finish on a loaded 2-core machine.
        var job = _dir.File("snap.fio");
        await File.WriteAllTextAsync(job, Fio(host.Uri("acme/vm"), "randwrite",
            "bs=4k\nsize=12m\niodepth=4\nrate_iops=,300\nverify=crc32c\nverify_fatal=1\ndo_verify=1"));
        using var fio = FioProcess.Start(job);
        await fio.Running.WaitAsync(TimeSpan.FromSeconds(60));

        var first = host.CtlJson("snapshot", "create", "acme", "vm", "before");
        var second = host.CtlJson("snapshot", "create", "acme", "vm", "during");
        host.CtlOk("snapshot", "delete", "acme", "vm", "before");
        var listed = host.CtlJson("snapshot", "list", "acme", "vm");
        Assert.False(fio.HasExited, "fio ended before the snapshots were done: the test did not snapshot under load");
        var report = await fio.WaitAsync(TimeSpan.FromSeconds(120));
        Assert.All(report.Errors, e => Assert.Equal(0, e));
        Assert.Equal(12 * MiB, report.Json.GetProperty("jobs")[0].GetProperty("write").GetProperty("io_bytes").GetInt64());

        Assert.Equal("before", first.GetProperty("name").GetString());
        Assert.Equal([("during", second.GetProperty("id").GetString())],
            listed.EnumerateArray().Select(s => (s.GetProperty("name").GetString(), s.GetProperty("id").GetString())).ToList());
        var check = host.Ctl("image", "check", "acme", "vm");
        Assert.True(check.ExitCode == 0, $"q2a ctl image check: exit {check.ExitCode}\n{check.StdOut}{check.StdErr}");
        Assert.Contains("No errors were found on the image.", check.StdOut);

        StopCleanly(host, image);
        var qemuList = QemuTools.QemuImg("snapshot", "-l", image).EnsureSuccess().StdOut;
        Assert.Contains("during", qemuList);
        Assert.DoesNotContain("before", qemuList);
        using var qemuInfo = JsonDocument.Parse(QemuTools.QemuImg("info", "--output=json", image).EnsureSuccess().StdOut);
        var qemuSnapshots = qemuInfo.RootElement.GetProperty("snapshots").EnumerateArray()
            .Select(s => (s.GetProperty("name").GetString(), s.GetProperty("id").GetString())).ToList();
        Assert.Equal([("during", second.GetProperty("id").GetString())], qemuSnapshots);
    }

    [QemuFact]
    public async Task A_tenant_quota_fails_writes_with_ENOSPC_for_that_tenant_only_and_the_image_checks_clean()
    {
        using var host = await HostProcess.StartAsync(_dir.Path);
        host.CtlOk("tenant", "add", "small", "--quota", "2M");
        host.CtlOk("tenant", "add", "big");
        host.CtlOk("image", "create", "small", "disk", "64M");
        host.CtlOk("image", "create", "big", "disk", "64M");
        host.CtlOk("export", "add", "small", "disk");
        host.CtlOk("export", "add", "big", "disk");
        var small = host.Uri("small/disk");

        Io(small, "raw", "write -P 0x11 0 1M", "flush");
        // 2 MiB more would pass the quota: the whole request fails with ENOSPC and maps nothing.
        var over = QemuTools.QemuIo("-f", "raw", small, "-c", "write -P 0x22 1M 2M");
        Assert.NotEqual(0, over.ExitCode);
        Assert.Contains("No space left on device", over.StdOut + over.StdErr);
        Io(small, "raw", "read -P 0x11 0 1M", "read -P 0 1M 2M");
        var used = host.CtlJson("tenant", "info", "small");
        Assert.InRange(used.GetProperty("usedBytes").GetInt64(), 1 * MiB, 2 * MiB);

        // The other tenant writes on.
        Io(host.Uri("big/disk"), "raw", "write -P 0x33 0 8M", "flush", "read -P 0x33 0 8M");

        // Space freed by discard counts back; a raised quota takes effect at once.
        Io(small, "raw", "discard 0 1M", "write -P 0x44 1M 1M", "flush");
        Assert.Equal(8 * MiB, host.CtlJson("tenant", "set", "small", "--quota", "8M").GetProperty("quota").GetInt64());
        Io(small, "raw", "write -P 0x55 2M 2M", "flush", "read -P 0x44 1M 1M", "read -P 0x55 2M 2M");

        var check = host.Ctl("image", "check", "small", "disk");
        Assert.True(check.ExitCode == 0, $"q2a ctl image check: exit {check.ExitCode}\n{check.StdOut}{check.StdErr}");
        StopCleanly(host, host.ImagePath("small", "disk"), host.ImagePath("big", "disk"));
        Io(host.ImagePath("small", "disk"), "qcow2", "read -P 0 0 1M", "read -P 0x44 1M 1M", "read -P 0x55 2M 2M", "read -P 0 4M 1M");
        Io(host.ImagePath("big", "disk"), "qcow2", "read -P 0x33 0 8M");
    }

    [FioFact]
    public async Task A_1000_iops_tenant_throttle_holds_fio_within_10_percent_while_the_other_tenant_runs_unthrottled()
    {
        using var host = await HostProcess.StartAsync(_dir.Path);
        foreach (var tenant in (string[])["slow", "fast"])
        {
            host.CtlOk("tenant", "add", tenant);
            host.CtlOk("image", "create", tenant, "disk", "64M");
            host.CtlOk("export", "add", tenant, "disk");
        }
        var limit = host.CtlJson("limit", "set", "--tenant", "slow", "--iops", "1000");
        Assert.Equal("tenant", limit.GetProperty("scope").GetString());
        Assert.Equal(1000, limit.GetProperty("iops").GetInt64());
        Assert.Contains("slow", host.CtlOk("limit", "list"));

        // Both at once, 4 s each after a 1 s ramp (QEMU's bucket lets a short burst through at the start).
        const string timing = "bs=4k\niodepth=8\ntime_based=1\nramp_time=1\nruntime=4";
        var slowJob = _dir.File("slow.fio");
        var fastJob = _dir.File("fast.fio");
        await File.WriteAllTextAsync(slowJob, Fio(host.Uri("slow/disk"), "randread", timing));
        await File.WriteAllTextAsync(fastJob, Fio(host.Uri("fast/disk"), "randread", timing));
        using var slow = FioProcess.Start(slowJob);
        using var fast = FioProcess.Start(fastJob);
        var slowReport = await slow.WaitAsync(TimeSpan.FromSeconds(60));
        var fastReport = await fast.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.All(slowReport.Errors.Concat(fastReport.Errors), e => Assert.Equal(0, e));
        Assert.InRange(slowReport.Iops, 900, 1100);
        Assert.True(fastReport.Iops > 2000, $"the unthrottled tenant ran at {fastReport.Iops:0} IOPS");

        host.CtlOk("limit", "clear", "--tenant", "slow");
        Assert.DoesNotContain("slow", host.CtlOk("limit", "list"));
        StopCleanly(host, host.ImagePath("slow", "disk"), host.ImagePath("fast", "disk"));
    }

    [FioFact]
    public async Task Metrics_count_the_ops_and_bytes_fio_reports_within_1_percent()
    {
        using var host = await HostProcess.StartAsync(_dir.Path);
        host.CtlOk("tenant", "add", "acme");
        host.CtlOk("image", "create", "acme", "disk", "64M");
        host.CtlOk("export", "add", "acme", "disk");
        const string requests = "qcow2actors_nbd_requests_total";
        const string io = "qcow2actors_nbd_io_bytes_total";
        (string, string) export = ("export", "acme/disk");

        var before = new PrometheusText(host.CtlOk("metrics"));
        var report = await FioProcess.RunAsync(_dir.File("m.fio"),
            Fio(host.Uri("acme/disk"), "randrw", "bs=4k\nsize=16m\niodepth=8"), TimeSpan.FromSeconds(120));
        Assert.All(report.Errors, e => Assert.Equal(0, e));
        var after = new PrometheusText(host.CtlOk("metrics"));

        double Ops(PrometheusText m) => m.Sum(requests, export, ("op", "read")) + m.Sum(requests, export, ("op", "write"));
        var ops = Ops(after) - Ops(before);
        var bytes = after.Sum(io, export) - before.Sum(io, export);
        Assert.True(after.Has(requests, export, ("tenant", "acme")), $"no {requests} sample for the export with tenant=\"acme\"; names: {string.Join(", ", after.Names)}");
        Assert.True(Math.Abs(ops - report.Ops) <= report.Ops * 0.01, $"metrics counted {ops} ops, fio {report.Ops}");
        Assert.True(Math.Abs(bytes - report.Bytes) <= report.Bytes * 0.01, $"metrics counted {bytes} bytes, fio {report.Bytes}");
        Assert.Equal(16 * MiB, report.Bytes);

        StopCleanly(host, host.ImagePath("acme", "disk"));
    }
}
