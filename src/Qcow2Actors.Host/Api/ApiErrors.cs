using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Api;

/// <summary>
/// Turns every failure of a request into <see cref="ErrorReply"/> JSON: refusals with their code, a body
/// that does not parse as bad-request (one line from the JSON reader), anything else internal (logged, no stack trace in the body).
/// </summary>
internal sealed class ApiErrors(RequestDelegate next, ILogger<ApiErrors> log)
{
    public async Task InvokeAsync(HttpContext context)
    {
        try
        {
            await next(context);
        }
        catch (HostApiException ex)
        {
            if (ex.Status >= 500) log.LogError("{Method} {Path}: {Message}", context.Request.Method, context.Request.Path, ex.Message);
            else log.LogInformation("refused {Method} {Path}: {Code}: {Message}", context.Request.Method, context.Request.Path, ex.Code, ex.Message);
            await WriteAsync(context, ex.Status, ex.Code, ex.Message);
        }
        catch (BadHttpRequestException ex)
        {
            var message = ex.InnerException is JsonException json ? $"request body: {json.Message}" : ex.Message;
            log.LogInformation("refused {Method} {Path}: bad request: {Message}", context.Request.Method, context.Request.Path, message);
            await WriteAsync(context, StatusCodes.Status400BadRequest, ErrorCodes.BadRequest, message);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !context.RequestAborted.IsCancellationRequested)
        {
            log.LogError(ex, "{Method} {Path} failed", context.Request.Method, context.Request.Path);
            await WriteAsync(context, StatusCodes.Status500InternalServerError, ErrorCodes.Internal, ex.Message);
        }
    }

    private static async Task WriteAsync(HttpContext context, int status, string code, string message)
    {
        if (context.Response.HasStarted) return;
        Auth.ControlAuthentication.SetErrorCode(context, code);
        context.Response.Clear();
        context.Response.StatusCode = status;
        await context.Response.WriteAsJsonAsync(new ErrorReply { Code = code, Message = message.ReplaceLineEndings(" ") }, HostJson.Options);
    }
}
