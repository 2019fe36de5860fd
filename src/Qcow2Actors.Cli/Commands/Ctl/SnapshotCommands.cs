using System.CommandLine;
using System.Globalization;
using System.Text;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// <c>q2a ctl snapshot create|list|delete|apply TENANT IMAGE [SNAPSHOT]</c>: internal snapshots of an image,
/// served or not (the host pauses writes, checkpoints, edits and resumes; clients see no error).
/// </summary>
internal static class SnapshotCommands
{
    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("snapshot", "create, list, delete or apply internal snapshots of an image, served or not");

        var (lTenant, lImage) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"));
        var list = new Command("list", "list an image's snapshots as qemu-img snapshot -l does") { lTenant, lImage };
        globals.SetAction(list, (parse, ctx) => ctx.PrintAsync<SnapshotReply[]>(HttpMethod.Get,
            Routes.SnapshotPath(parse.GetValue(lTenant)!, parse.GetValue(lImage)!), null, Table));
        group.Subcommands.Add(list);

        var (cTenant, cImage, cName) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"), new Argument<string>("SNAPSHOT") { Description = "the new snapshot's name" });
        var create = new Command("create", "take a snapshot") { cTenant, cImage, cName };
        globals.SetAction(create, (parse, ctx) => ctx.PrintAsync<SnapshotReply>(HttpMethod.Post,
            Routes.SnapshotPath(parse.GetValue(cTenant)!, parse.GetValue(cImage)!),
            new SnapshotCreateRequest { Name = parse.GetValue(cName)! }, s => Table([s])));
        group.Subcommands.Add(create);

        var (dTenant, dImage, dName) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"), new Argument<string>("SNAPSHOT") { Description = "ID or name" });
        var delete = new Command("delete", "delete a snapshot") { dTenant, dImage, dName };
        globals.SetAction(delete, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete,
            Routes.SnapshotPath(parse.GetValue(dTenant)!, parse.GetValue(dImage)!, parse.GetValue(dName)!)));
        group.Subcommands.Add(delete);

        var (aTenant, aImage, aName) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"), new Argument<string>("SNAPSHOT") { Description = "ID or name" });
        var apply = new Command("apply", "revert the disk to a snapshot") { aTenant, aImage, aName };
        globals.SetAction(apply, (parse, ctx) => ctx.PrintAsync<SnapshotReply>(HttpMethod.Post,
            Routes.SnapshotPath(parse.GetValue(aTenant)!, parse.GetValue(aImage)!, parse.GetValue(aName)!, apply: true),
            null, s => Table([s])));
        group.Subcommands.Add(apply);
        return group;
    }

    /// <summary>qemu-img snapshot -l's table (its column widths); nothing at all when there are no snapshots, as qemu-img.</summary>
    internal static string Table(IReadOnlyList<SnapshotReply> snapshots)
    {
        if (snapshots.Count == 0) return "";
        var sb = new StringBuilder("Snapshot list:\n");
        sb.Append(CultureInfo.InvariantCulture, $"{"ID",-10}{"TAG",-17}{"VM SIZE",8}{"DATE",20}{"VM CLOCK",13}{"ICOUNT",11}\n");
        foreach (var s in snapshots)
        {
            var date = s.Date.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
            var icount = s.Icount is null or -1 ? "" : s.Icount.Value.ToString(CultureInfo.InvariantCulture);
            sb.Append(CultureInfo.InvariantCulture, $"{s.Id,-9} {s.Name,-16} {CtlFormat.Size(s.VmStateSize),8}{date,20}{s.VmClock,13}{icount,11}\n");
        }
        return sb.ToString();
    }
}
