using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary><c>q2a ctl token create TENANT | list TENANT | revoke TENANT ID</c>: a tenant's API tokens.</summary>
internal static class TokenCommands
{
    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("token", "create, list or revoke a tenant's API tokens");

        var createTenant = new Argument<string>("TENANT");
        var create = new Command("create", "create a token for a tenant (printed once: the host keeps only its hash)") { createTenant };
        globals.SetAction(create, (parse, ctx) => ctx.PrintAsync<TokenReply>(HttpMethod.Post, Routes.TenantTokensPath(parse.GetValue(createTenant)!), null, Describe));
        group.Subcommands.Add(create);

        var listTenant = new Argument<string>("TENANT");
        var list = new Command("list", "list a tenant's tokens (ids and creation times, not the tokens)") { listTenant };
        globals.SetAction(list, (parse, ctx) => ctx.PrintAsync<TokenReply[]>(HttpMethod.Get, Routes.TenantTokensPath(parse.GetValue(listTenant)!), null, Table));
        group.Subcommands.Add(list);

        var revokeTenant = new Argument<string>("TENANT");
        var revokeId = new Argument<string>("ID");
        var revoke = new Command("revoke", "revoke one of a tenant's tokens") { revokeTenant, revokeId };
        globals.SetAction(revoke, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete, Routes.TenantTokensPath(parse.GetValue(revokeTenant)!, parse.GetValue(revokeId)!)));
        group.Subcommands.Add(revoke);
        return group;
    }

    /// <summary>One token as <c>key: value</c> lines (the secret only when the host just made it).</summary>
    internal static string Describe(TokenReply t) => CtlFormat.Lines(
        ("id", t.Id),
        ("tenant", t.Tenant),
        ("created", Time(t.Created)),
        ("token", t.Token));

    internal static string Table(IReadOnlyList<TokenReply> tokens) => CtlFormat.Table(
        [new("ID"), new("TENANT"), new("CREATED")],
        tokens.Select(t => new[] { t.Id, t.Tenant, Time(t.Created) }));

    private static string Time(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
}
