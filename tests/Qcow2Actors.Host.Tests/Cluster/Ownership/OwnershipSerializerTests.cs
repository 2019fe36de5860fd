using Akka.Actor;
using Qcow2Actors.Host.Cluster.Ownership;

namespace Qcow2Actors.Host.Tests.Cluster.Ownership;

/// <summary>The node agents' messages cross the wire unchanged, and an unknown manifest is refused in one line.</summary>
public sealed class OwnershipSerializerTests : IDisposable
{
    private readonly ActorSystem _system = ActorSystem.Create("ownership-serializer");

    [Fact]
    public void Every_agent_message_round_trips_with_its_manifest()
    {
        var serializer = new OwnershipSerializer((ExtendedActorSystem)_system);
        object[] messages =
        [
            new NodeReportRequest(),
            new NodeReport([new ServedImage("acme/disk1", "nbd://127.0.0.1:10809/acme/disk1"), new ServedImage("acme/disk2", "nbd://127.0.0.1:10809/acme/disk2")]),
            new UnserveRequest("acme/disk1"),
            new UnserveReply("acme/disk1", Found: true, Error: null),
            new UnserveReply("acme/disk2", Found: true, Error: "did not stop"),
        ];
        foreach (var message in messages)
        {
            var back = serializer.FromBinary(serializer.ToBinary(message), serializer.Manifest(message));
            Assert.Equal(message.GetType(), back.GetType());
            if (message is NodeReport report)
                Assert.Equal(report.Images, ((NodeReport)back).Images);
            else
                Assert.Equal(message, back);
        }
    }

    [Fact]
    public void An_unknown_manifest_is_refused_naming_it()
    {
        var serializer = new OwnershipSerializer((ExtendedActorSystem)_system);
        var ex = Assert.Throws<System.Runtime.Serialization.SerializationException>(() => serializer.FromBinary([], "Nope"));
        Assert.Equal("unknown ownership message 'Nope'", ex.Message);
    }

    public void Dispose() => _system.Dispose();
}
