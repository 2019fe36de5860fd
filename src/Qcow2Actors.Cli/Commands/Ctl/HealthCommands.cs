using System.CommandLine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// <c>q2a ctl health</c>, and the two documents the control endpoint serves besides the API:
/// <c>q2a ctl metrics</c> (Prometheus text) and <c>q2a ctl openapi</c> (the OpenAPI document).
/// </summary>
internal static class HealthCommands
{
    public static IEnumerable<Command> Create(CtlGlobals globals)
    {
        var health = new Command("health", "show the host's state: ok or degraded, counts, failed images");
        globals.SetAction(health, (_, ctx) => ctx.PrintAsync<HealthReply>(HttpMethod.Get, Routes.Health, null, Describe));

        var metrics = new Command("metrics", "print the host's metrics (Prometheus text format, as GET /metrics)");
        globals.SetAction(metrics, (_, ctx) => Raw(ctx, Routes.Metrics));

        var openApi = new Command("openapi", "print the control API's OpenAPI document");
        globals.SetAction(openApi, async (_, ctx) =>
        {
            var json = await ctx.Client.SendAsync(HttpMethod.Get, Routes.OpenApi, null, ctx.Cancellation);
            await ctx.Out.WriteAsync(CtlJson.Pretty(json));
            return 0;
        });
        return [health, metrics, openApi];
    }

    private static async Task<int> Raw(CtlContext ctx, string route)
    {
        var text = await ctx.Client.SendAsync(HttpMethod.Get, route, null, ctx.Cancellation);
        await ctx.Out.WriteAsync(text);
        return 0;
    }

    /// <summary>The health reply as <c>key: value</c> lines.</summary>
    internal static string Describe(HealthReply h) => CtlFormat.Lines(
        ("status", ImageCommands.Text(h.Status)),
        ("tenants", CtlFormat.Number(h.Tenants)),
        ("images", CtlFormat.Number(h.Images)),
        ("open images", CtlFormat.Number(h.OpenImages)),
        ("exports", CtlFormat.Number(h.Exports)),
        ("connections", CtlFormat.Number(h.Connections)),
        ("failed images", h.FailedImages.Count == 0 ? "none" : string.Join(", ", h.FailedImages)));
}
