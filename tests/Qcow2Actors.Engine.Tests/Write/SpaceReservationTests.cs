using Qcow2Actors.Engine.Write;
using Xunit;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class SpaceReservationTests
{
    [Fact]
    public void A_child_disposed_after_its_parent_gives_its_rest_back_to_the_quota()
    {
        // A table operation's reservation can end after the request's (its completion races with its clean-up).
        var quota = new SpaceQuota("t", 1 << 20);
        var request = new SpaceReservation(quota);
        Assert.True(request.TryEnsure(8192, unlimited: false));
        var operation = new SpaceReservation(quota, request);
        Assert.True(operation.TryEnsure(8192, unlimited: false));
        Assert.Equal(4096, operation.Consume(4096)); // now the image's charge
        request.Dispose();
        operation.Dispose();
        Assert.Equal(4096, quota.UsedBytes);
    }

    [Fact]
    public void Rest_goes_to_the_parent_while_it_lives_and_to_the_quota_when_it_ends()
    {
        var quota = new SpaceQuota("t", 1 << 20);
        var request = new SpaceReservation(quota);
        Assert.True(request.TryEnsure(12288, unlimited: false));
        using (var operation = new SpaceReservation(quota, request))
        {
            Assert.True(operation.TryEnsure(4096, unlimited: false));
            Assert.Equal(8192, request.Remaining);
        }
        Assert.Equal(12288, request.Remaining);
        Assert.Equal(12288, quota.UsedBytes);
        request.Dispose();
        Assert.Equal(0, quota.UsedBytes);
    }

    [Fact]
    public void A_grandchild_ending_last_still_returns_everything()
    {
        var quota = new SpaceQuota("t", 1 << 20);
        var request = new SpaceReservation(quota);
        var operation = new SpaceReservation(quota, request);
        var allocation = new SpaceReservation(quota, operation);
        Assert.True(allocation.TryEnsure(4096, unlimited: false));
        request.Dispose();
        operation.Dispose();
        allocation.Dispose();
        Assert.Equal(0, quota.UsedBytes);
    }
}
