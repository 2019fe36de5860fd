using System.Security.Cryptography;
using System.Text;

namespace Qcow2Actors.Host.Auth;

/// <summary>Bearer tokens: made from 32 random bytes, kept only as their SHA-256, compared in constant time.</summary>
internal static class TokenHash
{
    /// <summary>Every token the host makes starts so, which makes a leaked one easy to grep for.</summary>
    public const string Prefix = "q2a_";

    public static string NewToken() => Prefix + Base64Url(RandomNumberGenerator.GetBytes(32));

    /// <summary>A short id that names a token in lists, the audit log and revocations (not a secret).</summary>
    public static string NewId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));

    public static byte[] Of(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));

    public static bool Equal(byte[] a, byte[] b) => CryptographicOperations.FixedTimeEquals(a, b);

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
