using System.CommandLine;
using System.Globalization;
using System.Text;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a snapshot [-f qcow2] [-q] [-U] [-l | -c NAME | -a NAME | -d NAME] IMG</c>: lists, creates,
/// applies or deletes internal snapshots of a closed image, as qemu-img snapshot does (no action
/// lists). The work is <see cref="SnapshotEditor"/>'s.
/// </summary>
internal static class SnapshotCommand
{
    public static Command Create()
    {
        var list = new Option<bool>("-l") { Description = "list all snapshots in the image" };
        var create = new Option<string?>("-c") { Description = "create a snapshot named SNAPSHOT" };
        var apply = new Option<string?>("-a") { Description = "revert the disk to snapshot SNAPSHOT (an ID or a name)" };
        var delete = new Option<string?>("-d") { Description = "delete the snapshot named SNAPSHOT" };
        var format = new Option<string?>("-f") { Description = "image format (qcow2)" };
        var quiet = new Option<bool>("-q") { Description = "quiet" };
        // -U / --force-share, as qemu-img snapshot spells it; listing only (checked below).
        var forceShare = ForceShareOption.Create();
        var image = new Argument<string>("IMG");
        var command = new Command("snapshot", "list, create, apply or delete internal snapshots")
            { list, create, apply, delete, format, quiet, forceShare, image };
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var path = parse.GetValue(image)!;
            Formats.RequireQcow2(parse.GetValue(format));
            var c = parse.GetValue(create);
            var a = parse.GetValue(apply);
            var d = parse.GetValue(delete);
            bool l = parse.GetValue(list);
            if ((l ? 1 : 0) + (c is null ? 0 : 1) + (a is null ? 0 : 1) + (d is null ? 0 : 1) > 1)
                throw new CliException("Cannot mix '-l', '-a', '-c', '-d'");
            if (parse.GetValue(forceShare) && (c ?? a ?? d) is not null)
                throw new CliException("Invalid option -U: force-share is only allowed for listing");
            if (c is not null) SnapshotEditor.Create(path, c);
            else if (a is not null)
            {
                // qemu-img refuses to revert an image that carries persistent bitmaps (enabled or not): they would no longer
                // describe the disk. It says so before it looks for the snapshot.
                if (Engine.Info.ImageInfo.ReadChain(path, backingChain: false)[0].Bitmaps.Count > 0)
                    throw new CliException($"Could not apply snapshot '{a}': Device has active dirty bitmaps");
                SnapshotEditor.Apply(path, a);
            }
            else if (d is not null) SnapshotEditor.Delete(path, d);
            else Console.Out.Write(Table(SnapshotEditor.List(path, parse.GetValue(forceShare))));
            return 0;
        }));
        return command;
    }

    /// <summary>qemu-img 7.2's dump_snapshots (bdrv_snapshot_dump): nothing at all when there are no snapshots.</summary>
    internal static string Table(IReadOnlyList<SnapshotEntry> snapshots)
    {
        if (snapshots.Count == 0) return "";
        var sb = new StringBuilder("Snapshot list:\n");
        sb.Append(CultureInfo.InvariantCulture, $"{"ID",-10}{"TAG",-17}{"VM SIZE",8}{"DATE",20}{"VM CLOCK",13}{"ICOUNT",11}\n");
        foreach (var s in snapshots)
        {
            var date = DateTimeOffset.FromUnixTimeSeconds(s.DateSeconds).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
            ulong secs = s.VmClockNanoseconds / 1_000_000_000;
            var clock = string.Create(CultureInfo.InvariantCulture, $"{secs / 3600:00}:{secs / 60 % 60:00}:{secs % 60:00}.{s.VmClockNanoseconds / 1_000_000 % 1000:000}");
            var icount = s.Icount is null or -1 ? "" : s.Icount.Value.ToString(CultureInfo.InvariantCulture);
            sb.Append(CultureInfo.InvariantCulture, $"{s.Id,-9} {s.Name,-16} {Formats.SizeToString((long)s.VmStateSize),8}{date,20}{clock,13}{icount,11}\n");
        }
        return sb.ToString();
    }
}
