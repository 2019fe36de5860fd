namespace Qcow2Actors.Nbd.Throttling;

/// <summary>Which limits a request is charged to: reads, or writes (write-zeroes and trim included).</summary>
internal enum ThrottleDirection
{
    Read = 0,
    Write = 1,
}
