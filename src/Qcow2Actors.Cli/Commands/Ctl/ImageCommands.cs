using System.CommandLine;
using System.Globalization;
using System.Text;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// <c>q2a ctl image create TENANT NAME SIZE [-o OPTIONS] | list [TENANT] | info TENANT NAME |
/// open|close|delete|check TENANT NAME | resize TENANT NAME SIZE</c>.
/// </summary>
internal static class ImageCommands
{
    /// <summary><c>image check</c>'s exit code when the image has errors, corruptions or leaks.</summary>
    public const int NotCleanExit = 3;

    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("image", "create, list, open, close, check, resize or delete a tenant's images");

        var (cTenant, cName) = (new Argument<string>("TENANT"), new Argument<string>("NAME") { Description = "image name ([A-Za-z0-9._-], not starting with '.'); the file is DATA_DIR/TENANT/NAME.qcow2" });
        var cSize = new Argument<string>("SIZE") { Description = "virtual size (k, M, G, T suffixes)" };
        var cOptions = new Option<string?>("-o") { Description = "format options as q2a create -o takes them (cluster_size=4k,lazy_refcounts=on)" };
        var create = new Command("create", "create a qcow2 image in a tenant and open it") { cTenant, cName, cSize, cOptions };
        globals.SetAction(create, (parse, ctx) => ctx.PrintAsync<ImageReply>(HttpMethod.Post,
            Routes.TenantImagesPath(parse.GetValue(cTenant)!),
            new ImageCreateRequest { Name = parse.GetValue(cName)!, Size = CtlValues.Size(parse.GetValue(cSize)!, "SIZE"), Options = parse.GetValue(cOptions) },
            Describe));
        group.Subcommands.Add(create);

        var lTenant = new Argument<string?>("TENANT") { Arity = ArgumentArity.ZeroOrOne, Description = "only this tenant's images" };
        var list = new Command("list", "list the images (of every tenant, or of one)") { lTenant };
        globals.SetAction(list, (parse, ctx) => ctx.PrintAsync<ImageReply[]>(HttpMethod.Get,
            parse.GetValue(lTenant) is { } t ? Routes.TenantImagesPath(t) : Routes.ImagesPath(), null, Table));
        group.Subcommands.Add(list);

        group.Subcommands.Add(OnImage(globals, "info", "show an image: its state, exports and what q2a info says", HttpMethod.Get, null, Describe));
        group.Subcommands.Add(OnImage(globals, "open", "open an image the host keeps closed", HttpMethod.Post, "open", Describe));
        group.Subcommands.Add(OnImage(globals, "close", "close an image (refused while it is exported)", HttpMethod.Post, "close", Describe));

        var (dTenant, dName) = (new Argument<string>("TENANT"), new Argument<string>("NAME"));
        var delete = new Command("delete", "delete an image and its file (refused while it is exported)") { dTenant, dName };
        globals.SetAction(delete, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete, Routes.ImagePath(parse.GetValue(dTenant)!, parse.GetValue(dName)!)));
        group.Subcommands.Add(delete);

        var (kTenant, kName) = (new Argument<string>("TENANT"), new Argument<string>("NAME"));
        var check = new Command("check", "check an image's consistency (a served one without stopping its clients); exit 3 when not clean") { kTenant, kName };
        globals.SetAction(check, async (parse, ctx) =>
        {
            var path = Routes.ImagePath(parse.GetValue(kTenant)!, parse.GetValue(kName)!, "check");
            var (reply, json) = await ctx.Client.SendAsync<CheckReply>(HttpMethod.Post, path, null, ctx.Cancellation);
            await ctx.Out.WriteAsync(ctx.Json ? CtlJson.Pretty(json) : Describe(reply));
            return IsClean(reply) ? 0 : NotCleanExit;
        });
        group.Subcommands.Add(check);

        var (rTenant, rName) = (new Argument<string>("TENANT"), new Argument<string>("NAME"));
        var rSize = new Argument<string>("SIZE") { Description = "new virtual size (k, M, G, T suffixes); NBD clients see it when they reconnect" };
        var resize = new Command("resize", "grow an image, served or not") { rTenant, rName, rSize };
        globals.SetAction(resize, (parse, ctx) => ctx.PrintAsync<ImageReply>(HttpMethod.Post,
            Routes.ImagePath(parse.GetValue(rTenant)!, parse.GetValue(rName)!, "resize"),
            new ResizeRequest { Size = CtlValues.Size(parse.GetValue(rSize)!, "SIZE") }, Describe));
        group.Subcommands.Add(resize);
        return group;
    }

    private static Command OnImage(CtlGlobals globals, string name, string description, HttpMethod method, string? action, Func<ImageReply, string> human)
    {
        var (tenant, image) = (new Argument<string>("TENANT"), new Argument<string>("NAME"));
        var command = new Command(name, description) { tenant, image };
        globals.SetAction(command, (parse, ctx) => ctx.PrintAsync(method, Routes.ImagePath(parse.GetValue(tenant)!, parse.GetValue(image)!, action), null, human));
        return command;
    }

    /// <summary>No errors, corruptions or leaks.</summary>
    internal static bool IsClean(CheckReply r) => r.Errors == 0 && r.Corruptions == 0 && r.Leaks == 0;

    /// <summary>One image as <c>key: value</c> lines, then what <c>q2a info</c> says of it when the reply has it.</summary>
    internal static string Describe(ImageReply i)
    {
        var sb = new StringBuilder(CtlFormat.Lines(
            ("tenant", i.Tenant),
            ("image", i.Name),
            ("path", i.Path),
            ("virtual size", CtlFormat.SizeAndBytes(i.VirtualSize)),
            ("allocated", CtlFormat.SizeAndBytes(i.AllocatedBytes)),
            ("state", Text(i.State)),
            ("reason", i.Reason),
            ("exports", i.Exports.Count == 0 ? "none" : string.Join(", ", i.Exports))));
        if (i.Info is { ValueKind: System.Text.Json.JsonValueKind.Object } info)
            sb.Append("image information:\n").Append(CtlFormat.Json(info, 1));
        return sb.ToString();
    }

    /// <summary>The images as a table.</summary>
    internal static string Table(IReadOnlyList<ImageReply> images) => CtlFormat.Table(
        [new("TENANT"), new("IMAGE"), new("VIRTUAL-SIZE", true), new("ALLOCATED", true), new("STATE"), new("EXPORTS")],
        images.Select(i => new[]
        {
            i.Tenant, i.Name, CtlFormat.Size(i.VirtualSize), CtlFormat.Size(i.AllocatedBytes), Text(i.State),
            i.Exports.Count == 0 ? "-" : string.Join(",", i.Exports),
        }));

    /// <summary>A check result the way qemu-img check words it.</summary>
    internal static string Describe(CheckReply r)
    {
        var sb = new StringBuilder();
        foreach (var m in r.Messages) sb.Append(m).Append('\n');
        if (IsClean(r)) sb.Append("No errors were found on the image.\n");
        if (r.Errors + r.Corruptions > 0)
            sb.Append(CultureInfo.InvariantCulture, $"\n{r.Errors + r.Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n");
        if (r.Leaks > 0)
            sb.Append(CultureInfo.InvariantCulture, $"\n{r.Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n");
        if (r.TotalClusters > 0)
            sb.Append(CultureInfo.InvariantCulture, $"{r.AllocatedClusters}/{r.TotalClusters} = {100.0 * r.AllocatedClusters / r.TotalClusters:0.00}% allocated\n");
        return sb.ToString();
    }

    /// <summary>An enum in the wire's spelling (<c>open</c>, <c>failed</c>).</summary>
    internal static string Text<T>(T value) where T : struct, Enum =>
        System.Text.Json.JsonSerializer.Serialize(value, HostJson.Options).Trim('"');
}
