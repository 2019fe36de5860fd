using System.CommandLine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// <c>q2a ctl tenant add NAME [--quota SIZE] [--max-images N] | list | info NAME | set NAME [--quota SIZE] [--max-images N] | remove NAME
/// | revoke NAME | restore NAME</c>.
/// </summary>
internal static class TenantCommands
{
    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("tenant", "add, list, change or remove tenants");

        var addName = new Argument<string>("NAME") { Description = "tenant name ([A-Za-z0-9._-], not starting with '.')" };
        var addQuota = QuotaOption();
        var addMax = MaxImagesOption();
        var add = new Command("add", "add a tenant") { addName, addQuota, addMax };
        globals.SetAction(add, (parse, ctx) => ctx.PrintAsync<TenantReply>(HttpMethod.Post, Routes.Tenants,
            new TenantCreateRequest
            {
                Name = parse.GetValue(addName)!,
                Quota = CtlValues.OptionalSize(parse.GetValue(addQuota), "--quota"),
                MaxImages = CtlValues.OptionalInt(parse.GetValue(addMax), "--max-images"),
            },
            Describe));
        group.Subcommands.Add(add);

        var list = new Command("list", "list the tenants");
        globals.SetAction(list, (_, ctx) => ctx.PrintAsync<TenantReply[]>(HttpMethod.Get, Routes.Tenants, null, Table));
        group.Subcommands.Add(list);

        var infoName = new Argument<string>("NAME");
        var info = new Command("info", "show one tenant") { infoName };
        globals.SetAction(info, (parse, ctx) => ctx.PrintAsync<TenantReply>(HttpMethod.Get, Routes.TenantPath(parse.GetValue(infoName)!), null, Describe));
        group.Subcommands.Add(info);

        var setName = new Argument<string>("NAME");
        var setQuota = QuotaOption();
        var setMax = MaxImagesOption();
        var set = new Command("set", "change a tenant's quota or image limit (at once; 0 removes the limit)") { setName, setQuota, setMax };
        globals.SetAction(set, (parse, ctx) =>
        {
            var quota = CtlValues.OptionalSize(parse.GetValue(setQuota), "--quota");
            var max = CtlValues.OptionalInt(parse.GetValue(setMax), "--max-images");
            if (quota is null && max is null) throw new CtlUsageException("tenant set: give --quota SIZE, --max-images N or both");
            return ctx.PrintAsync<TenantReply>(HttpMethod.Patch, Routes.TenantPath(parse.GetValue(setName)!),
                new TenantUpdateRequest { Quota = quota, MaxImages = max }, Describe);
        });
        group.Subcommands.Add(set);

        var removeName = new Argument<string>("NAME");
        var remove = new Command("remove", "remove a tenant that has no images") { removeName };
        globals.SetAction(remove, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete, Routes.TenantPath(parse.GetValue(removeName)!)));
        group.Subcommands.Add(remove);

        foreach (var revoke in new[] { true, false })
        {
            var name = new Argument<string>("NAME");
            var command = new Command(revoke ? "revoke" : "restore", revoke
                ? "revoke a tenant: its NBD clients are cut off and its tokens refused until restored"
                : "restore a revoked tenant") { name };
            globals.SetAction(command, (parse, ctx) => ctx.PrintAsync<TenantReply>(HttpMethod.Post, Routes.TenantActionPath(parse.GetValue(name)!, revoke), null, Describe));
            group.Subcommands.Add(command);
        }
        return group;
    }

    private static Option<string?> QuotaOption() =>
        new("--quota") { Description = "bytes of allocated clusters all the tenant's images may hold (k, M, G, T suffixes; 0: no limit)" };

    private static Option<string?> MaxImagesOption() =>
        new("--max-images") { Description = "how many images the tenant may have (0: no limit)" };

    /// <summary>One tenant as <c>key: value</c> lines.</summary>
    internal static string Describe(TenantReply t) => CtlFormat.Lines(
        ("tenant", t.Name),
        ("quota", t.Quota is null or 0 ? "none" : CtlFormat.SizeAndBytes(t.Quota.Value)),
        ("used", CtlFormat.SizeAndBytes(t.UsedBytes)),
        ("max images", t.MaxImages is null or 0 ? "none" : CtlFormat.Number(t.MaxImages.Value)),
        ("images", CtlFormat.Number(t.Images)),
        ("revoked", t.Revoked ? "yes" : null));

    /// <summary>The tenants as a table.</summary>
    internal static string Table(IReadOnlyList<TenantReply> tenants) => CtlFormat.Table(
        [new("TENANT"), new("QUOTA", true), new("USED", true), new("MAX-IMAGES", true), new("IMAGES", true)],
        tenants.Select(t => new[]
        {
            t.Name, CtlFormat.SizeLimit(t.Quota), CtlFormat.Size(t.UsedBytes), CtlFormat.Limit(t.MaxImages), CtlFormat.Number(t.Images),
        }));
}
