using System.Text;

namespace Qcow2Actors.Format;

/// <summary>Strict text decoding shared by the decoders: on-disk names are UTF-8 without NUL.</summary>
internal static class Strings
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static string Decode(ReadOnlySpan<byte> bytes, string field, long offset)
    {
        int nul = bytes.IndexOf((byte)0);
        if (nul >= 0)
            throw new Qcow2FormatException(field, offset + nul, "contains a NUL byte");
        try
        {
            return Strict.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new Qcow2FormatException(field, offset, "is not valid UTF-8");
        }
    }

    public static byte[] Encode(string value, string what)
    {
        var bytes = Strict.GetBytes(value);
        if (bytes.AsSpan().IndexOf((byte)0) >= 0) throw new ArgumentException($"{what} must not contain NUL");
        return bytes;
    }
}
