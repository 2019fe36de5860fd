using System.CommandLine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary><c>q2a ctl cluster status | serve TENANT IMAGE | unserve TENANT IMAGE | drain</c>: the cluster's members and image owners, serving and un-serving an image, draining this node.</summary>
internal static class ClusterCommands
{
    public static Command Create(CtlGlobals globals)
    {
        var group = new Command("cluster", "cluster mode (q2a host --cluster): members, which node owns which image, serving and un-serving an image");

        var status = new Command("status", "show the members as this node sees them and every image the cluster serves with its owner node and NBD URI");
        globals.SetAction(status, (_, ctx) => ctx.PrintAsync<ClusterReply>(HttpMethod.Get, Routes.Cluster, null, Describe));
        group.Subcommands.Add(status);

        var (tenant, image) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"));
        var serve = new Command("serve", "serve DATA_DIR/TENANT/IMAGE.qcow2 from the cluster: one node owns it at a time, a survivor takes it over when that node dies") { tenant, image };
        globals.SetAction(serve, (parse, ctx) => ctx.PrintAsync<ClusterImageRequest>(HttpMethod.Post, Routes.ClusterImages,
            new ClusterImageRequest { Tenant = parse.GetValue(tenant)!, Image = parse.GetValue(image)! },
            r => $"{r.Tenant}/{r.Image}: the cluster starts serving it on one node (q2a ctl cluster status shows which)\n"));
        group.Subcommands.Add(serve);

        var (unserveTenant, unserveImage) = (new Argument<string>("TENANT"), new Argument<string>("IMAGE"));
        var unserve = new Command("unserve", "stop serving TENANT/IMAGE from the cluster: its owner disconnects the export's clients and closes the image clean, and no node serves it again") { unserveTenant, unserveImage };
        globals.SetAction(unserve, (parse, ctx) => ctx.SendAsync(HttpMethod.Delete, Routes.ClusterImagePath(parse.GetValue(unserveTenant)!, parse.GetValue(unserveImage)!)));
        group.Subcommands.Add(unserve);

        var drain = new Command("drain", "this node leaves the cluster: its images are handed to the other nodes clean (clients connected elsewhere see no error), then it exits 0");
        globals.SetAction(drain, async (_, ctx) =>
        {
            int code = await ctx.SendAsync(HttpMethod.Post, Routes.ClusterDrain).ConfigureAwait(false);
            if (!ctx.Json) await ctx.Out.WriteAsync("draining: this node leaves the cluster, hands its images off and exits\n").ConfigureAwait(false);
            return code;
        });
        group.Subcommands.Add(drain);
        return group;
    }

    /// <summary>The node's view: itself, the leader, the members as a table, then every image's owner as a table.</summary>
    internal static string Describe(ClusterReply c) =>
        CtlFormat.Lines(("self", c.Self), ("leader", c.Leader ?? "none"), ("owned images", c.OwnedImages.Count == 0 ? "none" : string.Join(", ", c.OwnedImages)))
        + CtlFormat.Table([new("MEMBER"), new("STATUS"), new("REACHABLE")],
            c.Members.Select(m => new[] { m.Address, m.Status, m.Unreachable ? "no" : "yes" }))
        + "\n"
        + CtlFormat.Table([new("TENANT"), new("IMAGE"), new("NODE"), new("NBD")],
            c.Owners.Select(o => new[] { o.Tenant, o.Image, o.Node, o.Nbd ?? "(opening)" }))
        + (c.Unanswered.Count == 0 ? "" : $"no answer from {string.Join(", ", c.Unanswered)}: their images are not listed\n");
}
