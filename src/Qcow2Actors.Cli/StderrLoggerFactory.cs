using Microsoft.Extensions.Logging;

namespace Qcow2Actors.Cli;

/// <summary>
/// Loggers that write warnings and errors as one line each, <c>PREFIX: message</c> (plus the
/// exception's message, never its stack trace), to a writer such as stderr.
/// </summary>
internal sealed class StderrLoggerFactory(TextWriter writer, string prefix, LogLevel minimum = LogLevel.Warning) : ILoggerFactory
{
    // The writer is the caller's (stderr): locked around each line, never disposed here.
    private readonly Lock _gate = new();

    public ILogger CreateLogger(string categoryName) => new LineLogger(this);

    public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException("this factory writes to one writer only");

    public void Dispose() { }

    private sealed class LineLogger(StderrLoggerFactory factory) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= factory.Minimum && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            var text = formatter(state, exception);
            if (exception is not null) text += ": " + exception.Message;
            lock (factory._gate)
            {
                factory.Writer.WriteLine($"{factory.Prefix}: {text.ReplaceLineEndings(" ")}");
                factory.Writer.Flush();
            }
        }
    }

    private LogLevel Minimum => minimum;

    private string Prefix => prefix;

    private TextWriter Writer => writer;
}
