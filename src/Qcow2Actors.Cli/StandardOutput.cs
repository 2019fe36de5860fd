using System.Runtime.InteropServices;
using System.Text;

namespace Qcow2Actors.Cli;

/// <summary>
/// Writes a verb's whole answer to file descriptor 1 with write(2), without going through <see cref="Console"/>.
/// </summary>
/// <remarks>
/// Why: on Linux the first use of <see cref="Console.Out"/> sets up the runtime's terminal and signal handling
/// (System.Console and two more assemblies loaded, a pipe and a signal thread made, a JIT compile): ~9 ms of a
/// short verb's start-up on this machine, against ~1 ms for a write to the descriptor
/// (bench/results/info-startup-2026-12-03.md). <c>q2a info</c> writes its answer once, at the end, so it has no
/// use for a console writer. write(2), not a FileStream: a FileStream writes a regular file at its own position
/// and leaves the descriptor's offset behind, so the next writer to a shared `> file` would overwrite the answer.
/// A reader that went away (EPIPE, as in <c>q2a info IMG | head -1</c>) is ignored, as <see cref="Console.Out"/>
/// ignores it. Other systems write through <see cref="Console.Out"/>.
/// </remarks>
internal static partial class StandardOutput
{
    private const int Descriptor = 1;
    private const int Interrupted = 4; // EINTR
    private const int BrokenPipe = 32; // EPIPE

    /// <summary>Writes <paramref name="text"/> as UTF-8 to standard output, all of it, before returning.</summary>
    /// <exception cref="IOException">Standard output refused the write (closed, or a full disk), naming the error.</exception>
    public static void Write(string text)
    {
        if (!OperatingSystem.IsLinux())
        {
            Console.Out.Write(text);
            return;
        }
        ReadOnlySpan<byte> left = Encoding.UTF8.GetBytes(text);
        while (!left.IsEmpty)
        {
            nint written = WriteCall(Descriptor, left, (nuint)left.Length);
            if (written >= 0)
            {
                left = left[(int)written..];
                continue;
            }
            int errno = Marshal.GetLastPInvokeError();
            if (errno == Interrupted) continue;
            if (errno == BrokenPipe) return; // the reader is gone: nobody to tell
            throw new IOException($"standard output: {Marshal.GetPInvokeErrorMessage(errno)}");
        }
    }

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint WriteCall(int fd, ReadOnlySpan<byte> buffer, nuint count);
}
