using System.Text.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Tests.Api;

public class ContractJsonTests
{
    [Fact]
    public void Replies_are_camel_case_with_enums_as_lower_case_strings_and_nulls_left_out()
    {
        var json = JsonSerializer.Serialize(new ImageReply
        {
            Tenant = "acme", Name = "disk1", Path = "/d/acme/disk1.qcow2", VirtualSize = 1024, State = ImageState.Failed,
            Reason = "EIO", Exports = ["acme/disk1"],
        }, HostJson.Options);

        Assert.Equal(
            """{"tenant":"acme","name":"disk1","path":"/d/acme/disk1.qcow2","virtualSize":1024,"allocatedBytes":0,"state":"failed","reason":"EIO","exports":["acme/disk1"]}""",
            json);
    }

    [Fact]
    public void Requests_read_back_from_the_wire_spelling()
    {
        var limit = JsonSerializer.Deserialize<LimitRequest>("""{"iops":1000,"burstSeconds":2}""", HostJson.Options)!;
        var health = JsonSerializer.Deserialize<HealthReply>("""{"status":"degraded","failedImages":["a/b"]}""", HostJson.Options)!;

        Assert.Equal(1000, limit.Iops);
        Assert.Equal(2, limit.BurstSeconds);
        Assert.Null(limit.Bps);
        Assert.Equal(HealthStatus.Degraded, health.Status);
        Assert.Equal(["a/b"], health.FailedImages);
    }

    [Fact]
    public void A_request_without_a_required_field_does_not_deserialize()
    {
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<TenantCreateRequest>("""{"quota":5}""", HostJson.Options));
    }

    [Fact]
    public void Route_helpers_escape_names_and_keep_the_slash_of_export_names()
    {
        Assert.Equal("/v1/tenants/acme/images/disk%201/snapshots/s1/apply", Routes.SnapshotPath("acme", "disk 1", "s1", apply: true));
        Assert.Equal("/v1/exports/acme/disk1", Routes.ExportPath("acme/disk1"));
        Assert.Equal("/v1/images?tenant=acme", Routes.ImagesPath("acme"));
    }

    [Fact]
    public void The_default_control_socket_follows_Q2A_CONTROL_when_set()
    {
        var before = Environment.GetEnvironmentVariable(ControlSocket.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(ControlSocket.EnvironmentVariable, "/tmp/x/control.sock");
            Assert.Equal("/tmp/x/control.sock", ControlSocket.DefaultPath());
            Environment.SetEnvironmentVariable(ControlSocket.EnvironmentVariable, null);
            Assert.EndsWith("q2a" + Path.DirectorySeparatorChar + "control.sock", ControlSocket.DefaultPath().Replace($"q2a-{ControlSocket.EffectiveUserId()}", "q2a", StringComparison.Ordinal));
        }
        finally
        {
            Environment.SetEnvironmentVariable(ControlSocket.EnvironmentVariable, before);
        }
    }
}
