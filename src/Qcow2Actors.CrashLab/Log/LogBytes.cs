namespace Qcow2Actors.CrashLab;

/// <summary>
/// The bytes of a crash log as the reader sees them, addressed by 64-bit file offsets: a log in memory, or a file
/// mapped read-only (<see cref="MappedLogBytes"/>) so a recording of any size is checked without being copied into
/// one array (an array stops at 2 GiB; a real workload's recording does not).
/// </summary>
internal abstract class LogBytes
{
    /// <summary>The log's length in bytes.</summary>
    public abstract long Length { get; }

    /// <summary>The <paramref name="length"/> bytes at <paramref name="offset"/>, to decode now.</summary>
    public abstract ReadOnlySpan<byte> Span(long offset, int length);

    /// <summary>The <paramref name="length"/> bytes at <paramref name="offset"/>, to keep (a write's data).</summary>
    public abstract ReadOnlyMemory<byte> Memory(long offset, int length);

    /// <summary>At most <paramref name="length"/> bytes from <paramref name="offset"/>: fewer when the log ends first.</summary>
    public ReadOnlySpan<byte> UpTo(long offset, int length) => Span(offset, (int)Math.Min(length, Length - offset));

    /// <summary>A log held in memory.</summary>
    public static LogBytes Of(ReadOnlyMemory<byte> bytes) => new InMemory(bytes);

    private sealed class InMemory(ReadOnlyMemory<byte> bytes) : LogBytes
    {
        public override long Length => bytes.Length;
        public override ReadOnlySpan<byte> Span(long offset, int length) => bytes.Span.Slice(checked((int)offset), length);
        public override ReadOnlyMemory<byte> Memory(long offset, int length) => bytes.Slice(checked((int)offset), length);
    }
}
