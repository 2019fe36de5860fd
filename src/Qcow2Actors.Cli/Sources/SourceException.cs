namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// Why an image argument cannot be opened, worded as qemu-img words it after "Could not open 'ARG': "
/// (the resolver adds that prefix), or, with <see cref="Whole"/>, a line qemu-img prints on its own
/// (an --object error, "--image-opts and --format are mutually exclusive").
/// </summary>
internal sealed class SourceException : Exception
{
    /// <summary>A reason the resolver prefixes with "Could not open 'ARG': ".</summary>
    public SourceException(string message) : base(message) { }

    /// <summary>A reason; <paramref name="whole"/> when it is the whole line already.</summary>
    public SourceException(string message, bool whole) : base(message) => Whole = whole;

    /// <summary>Required by the analyzers.</summary>
    public SourceException() { }

    /// <summary>Required by the analyzers.</summary>
    public SourceException(string message, Exception inner) : base(message, inner) { }

    /// <summary>True when the message is printed as it is, without the "Could not open" prefix.</summary>
    public bool Whole { get; }
}
