namespace Qcow2Actors.Engine.Device;

/// <summary>Another process (q2a or QEMU) holds the image in a way this open cannot share.</summary>
public sealed class ImageLockException : IOException
{
    /// <summary>Describes the conflict as QEMU does, naming the image and the lock.</summary>
    public ImageLockException(string path, string failure)
        : base($"Could not open '{path}': {failure}: {Hint}")
    {
        ImagePath = path;
        Failure = failure;
    }

    /// <summary>The image (or its data file or journal) whose lock conflicted.</summary>
    public string ImagePath { get; }

    /// <summary>QEMU's words for the conflict, e.g. <c>Failed to get "write" lock</c>.</summary>
    public string Failure { get; }

    /// <summary>The conflict and the hint, without the file name: <c>Failed to get "write" lock: is another process using the image?</c></summary>
    public string Reason => $"{Failure}: {Hint}";

    private const string Hint = "is another process using the image?";
}
