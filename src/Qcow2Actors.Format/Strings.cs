using System.Text;

namespace Qcow2Actors.Format;

/// <summary>Text decoding shared by the decoders: on-disk names are UTF-8 without NUL.</summary>
internal static class Strings
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Strict under <see cref="ValidationProfile.Open"/>; otherwise as QEMU keeps names: C strings
    /// (cut at the first NUL), with invalid UTF-8 replaced rather than refused.
    /// </summary>
    public static string Decode(ReadOnlySpan<byte> bytes, string field, long offset, ValidationProfile profile = ValidationProfile.Open)
    {
        int nul = bytes.IndexOf((byte)0);
        if (profile != ValidationProfile.Open) return Encoding.UTF8.GetString(nul >= 0 ? bytes[..nul] : bytes);
        if (nul >= 0)
            throw new Qcow2FormatException(Qcow2Rule.InvalidString, field, offset + nul, "contains a NUL byte");
        try
        {
            return Strict.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new Qcow2FormatException(Qcow2Rule.InvalidString, field, offset, "is not valid UTF-8");
        }
    }

    public static byte[] Encode(string value, string what)
    {
        var bytes = Strict.GetBytes(value);
        if (bytes.AsSpan().IndexOf((byte)0) >= 0) throw new ArgumentException($"{what} must not contain NUL");
        return bytes;
    }
}
