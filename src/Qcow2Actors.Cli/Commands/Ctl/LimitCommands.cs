using System.CommandLine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// <c>q2a ctl limit set (--export EXPORT|--tenant TENANT) [--iops N] [--bps N] [--burst-iops N] [--burst-bps N]
/// [--read-iops N] [--write-iops N] [--read-bps N] [--write-bps N] [--burst-length SECONDS] | list |
/// clear (--export E|--tenant T)</c>: throttle groups with QEMU's semantics, changed without reconnecting.
/// </summary>
internal static class LimitCommands
{
    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("limit", "set, list or clear I/O limits (throttle groups) of an export or a tenant");

        var (sExport, sTenant) = TargetOptions();
        var iops = Count("--iops", "I/O operations per second, read and write together");
        var bps = Rate("--bps", "bytes per second, read and write together");
        var readIops = Count("--read-iops", "read operations per second");
        var writeIops = Count("--write-iops", "write operations per second");
        var readBps = Rate("--read-bps", "bytes read per second");
        var writeBps = Rate("--write-bps", "bytes written per second");
        var burstIops = Count("--burst-iops", "operations per second allowed in a burst");
        var burstBps = Rate("--burst-bps", "bytes per second allowed in a burst");
        var burstLength = Count("--burst-length", "how many seconds a burst may last (SECONDS)");
        var set = new Command("set", "set the limits of an export or of a tenant (all its exports share them); replaces the previous ones")
            { sExport, sTenant, iops, bps, readIops, writeIops, readBps, writeBps, burstIops, burstBps, burstLength };
        globals.SetAction(set, (parse, ctx) =>
        {
            var route = Target(parse, sExport, sTenant, "limit set");
            var request = new LimitRequest
            {
                Iops = CtlValues.OptionalCount(parse.GetValue(iops), "--iops"),
                Bps = CtlValues.OptionalSize(parse.GetValue(bps), "--bps"),
                ReadIops = CtlValues.OptionalCount(parse.GetValue(readIops), "--read-iops"),
                WriteIops = CtlValues.OptionalCount(parse.GetValue(writeIops), "--write-iops"),
                ReadBps = CtlValues.OptionalSize(parse.GetValue(readBps), "--read-bps"),
                WriteBps = CtlValues.OptionalSize(parse.GetValue(writeBps), "--write-bps"),
                BurstIops = CtlValues.OptionalCount(parse.GetValue(burstIops), "--burst-iops"),
                BurstBps = CtlValues.OptionalSize(parse.GetValue(burstBps), "--burst-bps"),
                BurstSeconds = CtlValues.OptionalInt(parse.GetValue(burstLength), "--burst-length"),
            };
            if (request == new LimitRequest())
                throw new CtlUsageException("limit set: give at least one limit (--iops, --bps, ...); limit clear removes them");
            return ctx.PrintAsync<LimitReply>(HttpMethod.Put, route, request, Describe);
        });
        group.Subcommands.Add(set);

        var list = new Command("list", "list the limits");
        globals.SetAction(list, (_, ctx) => ctx.PrintAsync<LimitReply[]>(HttpMethod.Get, Routes.Limits, null, Table));
        group.Subcommands.Add(list);

        var (cExport, cTenant) = TargetOptions();
        var clear = new Command("clear", "remove the limits of an export or of a tenant") { cExport, cTenant };
        globals.SetAction(clear, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete, Target(parse, cExport, cTenant, "limit clear")));
        group.Subcommands.Add(clear);
        return group;
    }

    private static (Option<string?> Export, Option<string?> Tenant) TargetOptions() =>
        (new("--export") { Description = "the export (its name, e.g. acme/disk1)" },
         new("--tenant") { Description = "the tenant: one group shared by all its exports" });

    private static Option<string?> Count(string name, string description) => new(name) { Description = description + " (0: no limit)" };

    private static Option<string?> Rate(string name, string description) => new(name) { Description = description + " (k, M, G suffixes; 0: no limit)" };

    private static string Target(ParseResult parse, Option<string?> export, Option<string?> tenant, string verb) =>
        (parse.GetValue(export), parse.GetValue(tenant)) switch
        {
            ({ } e, null) => Routes.ExportLimitPath(e),
            (null, { } t) => Routes.TenantLimitPath(t),
            (null, null) => throw new CtlUsageException($"{verb}: give --export EXPORT or --tenant TENANT"),
            _ => throw new CtlUsageException($"{verb}: give --export EXPORT or --tenant TENANT, not both"),
        };

    /// <summary>One limit as <c>key: value</c> lines (only the limits that are set).</summary>
    internal static string Describe(LimitReply l) => CtlFormat.Lines(
        ("scope", ImageCommands.Text(l.Scope)),
        ("target", l.Target),
        ("iops", Set(l.Iops)),
        ("bps", SetRate(l.Bps)),
        ("read iops", Set(l.ReadIops)),
        ("write iops", Set(l.WriteIops)),
        ("read bps", SetRate(l.ReadBps)),
        ("write bps", SetRate(l.WriteBps)),
        ("burst iops", Set(l.BurstIops)),
        ("burst bps", SetRate(l.BurstBps)),
        ("burst length", l.BurstSeconds is null or 0 ? null : $"{CtlFormat.Number(l.BurstSeconds.Value)} s"));

    private static string? Set(long? value) => value is null or 0 ? null : CtlFormat.Number(value.Value);

    private static string? SetRate(long? value) => value is null or 0 ? null : $"{CtlFormat.Size(value.Value)}/s";

    /// <summary>The limits as a table; <c>-</c> is no limit.</summary>
    internal static string Table(IReadOnlyList<LimitReply> limits) => CtlFormat.Table(
        [new("SCOPE"), new("TARGET"), new("IOPS", true), new("BPS", true), new("READ-IOPS", true), new("WRITE-IOPS", true),
         new("READ-BPS", true), new("WRITE-BPS", true), new("BURST-IOPS", true), new("BURST-BPS", true), new("BURST-LENGTH", true)],
        limits.Select(l => new[]
        {
            ImageCommands.Text(l.Scope), l.Target, CtlFormat.Limit(l.Iops), CtlFormat.SizeLimit(l.Bps), CtlFormat.Limit(l.ReadIops),
            CtlFormat.Limit(l.WriteIops), CtlFormat.SizeLimit(l.ReadBps), CtlFormat.SizeLimit(l.WriteBps), CtlFormat.Limit(l.BurstIops),
            CtlFormat.SizeLimit(l.BurstBps), l.BurstSeconds is null or 0 ? "-" : $"{CtlFormat.Number(l.BurstSeconds.Value)}s",
        }));
}
