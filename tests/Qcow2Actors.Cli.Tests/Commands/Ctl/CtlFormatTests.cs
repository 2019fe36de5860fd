using System.Net;
using System.Text.Json;
using Qcow2Actors.Cli.Commands.Ctl;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Tests.Commands.Ctl;

/// <summary>
/// ctl's human output: tables whose columns line up under their headers, qemu-img's <c>key: value</c> lines
/// and check wording; <c>--output json</c> is the reply itself, indented.
/// </summary>
public sealed class CtlFormatTests
{
    [Fact]
    public void Tenants_are_a_table_with_sizes_right_aligned_and_no_limit_as_a_dash()
    {
        var text = TenantCommands.Table(
        [
            new TenantReply { Name = "acme", Quota = 1L << 30, MaxImages = 10, UsedBytes = 3L << 20, Images = 3 },
            new TenantReply { Name = "globex-long-name", UsedBytes = 0, Images = 0 },
        ]);
        Assert.Equal(
            "TENANT            QUOTA   USED  MAX-IMAGES  IMAGES\n" +
            "acme              1 GiB  3 MiB          10       3\n" +
            "globex-long-name      -    0 B           -       0\n", text);
    }

    [Fact]
    public void An_empty_list_still_prints_its_header()
    {
        Assert.Equal("TENANT  QUOTA  USED  MAX-IMAGES  IMAGES\n", TenantCommands.Table([]));
        Assert.Equal("", SnapshotCommands.Table([])); // as qemu-img snapshot -l: nothing at all
    }

    [Fact]
    public void One_tenant_is_key_value_lines_with_bytes()
    {
        Assert.Equal(
            "tenant: acme\nquota: 2 MiB (2097152 bytes)\nused: 512 KiB (524288 bytes)\nmax images: none\nimages: 1\n",
            TenantCommands.Describe(new TenantReply { Name = "acme", Quota = 2L << 20, UsedBytes = 512 << 10, Images = 1 }));
    }

    [Fact]
    public void An_image_shows_its_state_exports_and_what_info_says()
    {
        using var info = JsonDocument.Parse("""{"virtual-size": 67108864, "cluster-size": 65536, "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "lazy-refcounts": false}}, "snapshots": [{"id": "1", "name": "s"}]}""");
        var text = ImageCommands.Describe(new ImageReply
        {
            Tenant = "acme", Name = "disk", Path = "/d/acme/disk.qcow2", VirtualSize = 64 << 20, AllocatedBytes = 327680,
            State = ImageState.Open, Exports = ["acme/disk", "alias"], Info = info.RootElement.Clone(),
        });
        Assert.Equal(
            "tenant: acme\nimage: disk\npath: /d/acme/disk.qcow2\nvirtual size: 64 MiB (67108864 bytes)\nallocated: 320 KiB (327680 bytes)\n" +
            "state: open\nexports: acme/disk, alias\nimage information:\n" +
            "    virtual-size: 67108864\n    cluster-size: 65536\n    format-specific:\n        type: qcow2\n        data:\n" +
            "            compat: 1.1\n            lazy-refcounts: false\n    snapshots:\n        [0]:\n            id: 1\n            name: s\n",
            text);
    }

    [Fact]
    public void Images_are_a_table_and_a_failed_one_shows_its_reason()
    {
        ImageReply failed = new()
        {
            Tenant = "t", Name = "bad", Path = "/d/t/bad.qcow2", VirtualSize = 1L << 30, AllocatedBytes = 0, State = ImageState.Failed,
            Reason = "the file is gone",
        };
        Assert.Equal(
            "TENANT  IMAGE  VIRTUAL-SIZE  ALLOCATED  STATE   EXPORTS\n" +
            "t       bad           1 GiB        0 B  failed  -\n", ImageCommands.Table([failed]));
        Assert.Contains("state: failed\nreason: the file is gone\nexports: none\n", ImageCommands.Describe(failed));
    }

    [Fact]
    public void A_check_is_worded_as_qemu_img_check_words_it()
    {
        var clean = new CheckReply { AllocatedClusters = 16, TotalClusters = 1024 };
        Assert.Equal("No errors were found on the image.\n16/1024 = 1.56% allocated\n", ImageCommands.Describe(clean));
        Assert.True(ImageCommands.IsClean(clean));
        var leaky = new CheckReply { Leaks = 2, AllocatedClusters = 1, TotalClusters = 4, Messages = ["Leaked cluster 9 refcount=1 reference=0"] };
        Assert.Equal(
            "Leaked cluster 9 refcount=1 reference=0\n\n2 leaked clusters were found on the image.\n" +
            "This means waste of disk space, but no harm to data.\n1/4 = 25.00% allocated\n", ImageCommands.Describe(leaky));
        Assert.False(ImageCommands.IsClean(leaky));
    }

    [Fact]
    public void Exports_are_a_table_with_their_uri()
    {
        Assert.Equal(
            "EXPORT     TENANT  IMAGE  MODE  CONNECTIONS  STATE  URI\n" +
            "acme/disk  acme    disk   ro              2  ok     nbd://127.0.0.1:10809/acme/disk\n",
            ExportCommands.Table([new ExportReply
            {
                Name = "acme/disk", Tenant = "acme", Image = "disk", ReadOnly = true, Uri = "nbd://127.0.0.1:10809/acme/disk",
                Connections = 2, State = ExportState.Ok,
            }]));
    }

    [Fact]
    public void Snapshots_are_qemu_img_snapshot_l_columns()
    {
        var date = new DateTimeOffset(2026, 11, 30, 10, 0, 0, TimeSpan.Zero);
        var text = SnapshotCommands.Table([new SnapshotReply { Id = "1", Name = "before", VmStateSize = 0, Date = date, VmClock = "00:00:00.000" }]);
        var local = date.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(
            "Snapshot list:\n" +
            "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
            $"1         before                0 B{local,20} 00:00:00.000           \n", text);
    }

    [Fact]
    public void Limits_are_a_table_and_one_limit_lists_only_what_is_set()
    {
        var limit = new LimitReply { Scope = LimitScope.Tenant, Target = "acme", Iops = 1000, Bps = 10L << 20, BurstIops = 2000, BurstSeconds = 5 };
        Assert.Equal(
            "SCOPE   TARGET  IOPS     BPS  READ-IOPS  WRITE-IOPS  READ-BPS  WRITE-BPS  BURST-IOPS  BURST-BPS  BURST-LENGTH\n" +
            "tenant  acme    1000  10 MiB          -           -         -          -        2000          -            5s\n",
            LimitCommands.Table([limit]));
        Assert.Equal("scope: tenant\ntarget: acme\niops: 1000\nbps: 10 MiB/s\nburst iops: 2000\nburst length: 5 s\n", LimitCommands.Describe(limit));
    }

    [Fact]
    public void Health_is_key_value_lines_naming_failed_images()
    {
        Assert.Equal(
            "status: degraded\ntenants: 2\nimages: 6\nopen images: 5\nexports: 4\nconnections: 1\nfailed images: acme/a1\n",
            HealthCommands.Describe(new HealthReply
            {
                Status = HealthStatus.Degraded, Tenants = 2, Images = 6, OpenImages = 5, Exports = 4, Connections = 1, FailedImages = ["acme/a1"],
            }));
    }

    [Fact]
    public void Json_output_is_the_reply_indented()
    {
        Assert.Equal("{\n  \"name\": \"acme\",\n  \"images\": [\n    1,\n    2\n  ]\n}\n", CtlJson.Pretty("""{"name":"acme","images":[1,2]}"""));
        Assert.Equal("", CtlJson.Pretty(""));
    }

    [Fact]
    public void An_error_reply_becomes_its_code_and_message_and_anything_else_its_status()
    {
        var e = ControlClient.HostError(HttpStatusCode.Conflict, HttpMethod.Post, "/v1/tenants", """{"code":"tenant-exists","message":"tenant 'acme' exists"}""");
        Assert.Equal(("tenant-exists", "tenant 'acme' exists"), (e.Code, e.Message));
        var other = ControlClient.HostError(HttpStatusCode.NotFound, HttpMethod.Get, "/v1/nothing", "");
        Assert.Equal(("http-404", "the host answered 404 NotFound to GET /v1/nothing"), (other.Code, other.Message));
    }
}
