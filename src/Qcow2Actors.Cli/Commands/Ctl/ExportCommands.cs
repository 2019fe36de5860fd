using System.CommandLine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary><c>q2a ctl export add TENANT IMAGE [--name EXPORT] [--read-only] [-B BITMAP]... [-A] [--record LOG] | list | remove EXPORT</c>.</summary>
internal static class ExportCommands
{
    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("export", "add, list or remove NBD exports at run time");

        var (tenant, image) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"));
        var name = new Option<string?>("--name") { Description = "export name (default TENANT/IMAGE)" };
        var readOnly = new Option<bool>("--read-only") { Description = "export it read-only" };
        var bitmap = new Option<string[]>("--bitmap", "-B") { Description = "offer this persistent dirty bitmap as qemu:dirty-bitmap:NAME (repeatable), as qemu-nbd -B", AllowMultipleArgumentsPerToken = false };
        var allocationDepth = new Option<bool>("--allocation-depth", "-A") { Description = "offer qemu:allocation-depth, as qemu-nbd -A" };
        var record = new Option<string?>("--record") { Description = "record the guest's writes, zeroes, trims, flushes and FUA into this new crash-lab log, from a snapshot taken now: a file name in the tenant's directory on the host (an operator may give an absolute path)" };
        var add = new Command("add", "export an image over NBD (opening it if it is closed)") { tenant, image, name, readOnly, bitmap, allocationDepth, record };
        globals.SetAction(add, (parse, ctx) => ctx.PrintAsync<ExportReply>(HttpMethod.Post, Routes.Exports,
            new ExportAddRequest
            {
                Tenant = parse.GetValue(tenant)!, Image = parse.GetValue(image)!, Name = parse.GetValue(name), ReadOnly = parse.GetValue(readOnly) ? true : null,
                Bitmaps = parse.GetValue(bitmap) is { Length: > 0 } names ? names : null,
                AllocationDepth = parse.GetValue(allocationDepth) ? true : null,
                Record = parse.GetValue(record),
            },
            Describe));
        group.Subcommands.Add(add);

        var list = new Command("list", "list the exports");
        globals.SetAction(list, (_, ctx) => ctx.PrintAsync<ExportReply[]>(HttpMethod.Get, Routes.Exports, null, Table));
        group.Subcommands.Add(list);

        var removeName = new Argument<string>("EXPORT");
        var remove = new Command("remove", "remove an export (its connected clients are disconnected)") { removeName };
        globals.SetAction(remove, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete, Routes.ExportPath(parse.GetValue(removeName)!)));
        group.Subcommands.Add(remove);
        return group;
    }

    /// <summary>One export as <c>key: value</c> lines.</summary>
    internal static string Describe(ExportReply e) => CtlFormat.Lines(
        ("export", e.Name),
        ("tenant", e.Tenant),
        ("image", e.Image),
        ("read-only", e.ReadOnly ? "yes" : "no"),
        ("bitmaps", e.Bitmaps.Count > 0 ? string.Join(", ", e.Bitmaps) : null),
        ("allocation-depth", e.AllocationDepth ? "yes" : null),
        ("record", e.Record),
        ("record-snapshot", e.RecordSnapshot),
        ("uri", e.Uri),
        ("connections", CtlFormat.Number(e.Connections)),
        ("state", ImageCommands.Text(e.State)),
        ("reason", e.Reason));

    /// <summary>The exports as a table.</summary>
    internal static string Table(IReadOnlyList<ExportReply> exports) => CtlFormat.Table(
        [new("EXPORT"), new("TENANT"), new("IMAGE"), new("MODE"), new("CONNECTIONS", true), new("STATE"), new("URI")],
        exports.Select(e => new[]
        {
            e.Name, e.Tenant, e.Image, e.ReadOnly ? "ro" : "rw", CtlFormat.Number(e.Connections), ImageCommands.Text(e.State), e.Uri,
        }));
}
