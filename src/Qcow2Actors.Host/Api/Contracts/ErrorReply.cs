namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>The body of every non-2xx control API answer.</summary>
public sealed record ErrorReply
{
    /// <summary>A stable kebab-case id (one of <see cref="ErrorCodes"/>) a client can switch on.</summary>
    public required string Code { get; init; }

    /// <summary>One line naming what is wrong (the field, tenant, image or export); never a stack trace.</summary>
    public required string Message { get; init; }
}
