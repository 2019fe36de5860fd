using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

/// <summary>A refusal the control API answers with <see cref="ErrorReply"/>: HTTP status, stable code, one line.</summary>
internal sealed class HostApiException(int status, string code, string message) : Exception(message)
{
    public int Status { get; } = status;
    public string Code { get; } = code;

    public static HostApiException BadRequest(string message) => new(400, ErrorCodes.BadRequest, message);
    public static HostApiException NotFound(string code, string message) => new(404, code, message);
    public static HostApiException Conflict(string code, string message) => new(409, code, message);
    public static HostApiException NotImplemented(string what) =>
        new(501, ErrorCodes.NotImplemented, $"{what} is not implemented by this build of q2a host");
}
