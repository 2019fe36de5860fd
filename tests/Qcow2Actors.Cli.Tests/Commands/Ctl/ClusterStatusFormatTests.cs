using Qcow2Actors.Cli.Commands.Ctl;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Tests.Commands.Ctl;

/// <summary><c>q2a ctl cluster status</c>: the node's view, the members table, then every image's owner and NBD URI.</summary>
public sealed class ClusterStatusFormatTests
{
    [Fact]
    public void Status_lists_every_image_with_its_owner_and_uri_and_names_the_members_that_did_not_answer()
    {
        var text = ClusterCommands.Describe(new ClusterReply
        {
            Self = "akka.tcp://q2a-host@127.0.0.1:4053",
            Leader = "akka.tcp://q2a-host@127.0.0.1:4053",
            Members =
            [
                new ClusterMemberReply { Address = "akka.tcp://q2a-host@127.0.0.1:4053", Status = "up" },
                new ClusterMemberReply { Address = "akka.tcp://q2a-host@127.0.0.1:4054", Status = "up", Unreachable = true },
            ],
            OwnedImages = ["acme/disk1"],
            Owners =
            [
                new ClusterOwnerReply { Tenant = "acme", Image = "disk1", Node = "akka.tcp://q2a-host@127.0.0.1:4053", Nbd = "nbd://127.0.0.1:10809/acme/disk1" },
                new ClusterOwnerReply { Tenant = "acme", Image = "disk22", Node = "akka.tcp://q2a-host@127.0.0.1:4055" },
            ],
            Unanswered = ["akka.tcp://q2a-host@127.0.0.1:4054"],
        });
        Assert.Equal(
            "self: akka.tcp://q2a-host@127.0.0.1:4053\nleader: akka.tcp://q2a-host@127.0.0.1:4053\nowned images: acme/disk1\n" +
            "MEMBER                              STATUS  REACHABLE\n" +
            "akka.tcp://q2a-host@127.0.0.1:4053  up      yes\n" +
            "akka.tcp://q2a-host@127.0.0.1:4054  up      no\n" +
            "\n" +
            "TENANT  IMAGE   NODE                                NBD\n" +
            "acme    disk1   akka.tcp://q2a-host@127.0.0.1:4053  nbd://127.0.0.1:10809/acme/disk1\n" +
            "acme    disk22  akka.tcp://q2a-host@127.0.0.1:4055  (opening)\n" +
            "no answer from akka.tcp://q2a-host@127.0.0.1:4054: their images are not listed\n",
            text);
    }
}
