using System.Text.RegularExpressions;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// Tenant and image names become directory and file names under the data dir, so they are
/// restricted to [A-Za-z0-9._-]{1,64} and may not start with '.' (no "..", no hidden files).
/// </summary>
internal static partial class Names
{
    [GeneratedRegex("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$", RegexOptions.CultureInvariant)]
    private static partial Regex Valid();

    public static void Check(string? name, string what)
    {
        if (string.IsNullOrEmpty(name)) throw HostApiException.BadRequest($"{what} name is missing");
        if (!Valid().IsMatch(name))
            throw HostApiException.BadRequest($"{what} name '{Printable(name)}' is invalid: use 1 to 64 of A-Z a-z 0-9 . _ - and do not start with '.'");
    }

    /// <summary>An export name: any text the NBD protocol carries, but one line, so it can be logged and listed.</summary>
    public static void CheckExport(string name)
    {
        if (name.Length == 0) throw HostApiException.BadRequest("export name is empty");
        if (System.Text.Encoding.UTF8.GetByteCount(name) > 4096) throw HostApiException.BadRequest("export name is longer than 4096 bytes");
        if (name.Any(char.IsControl)) throw HostApiException.BadRequest($"export name '{Printable(name)}' contains control characters");
    }

    private static string Printable(string text) => new([.. text.Take(80).Select(c => char.IsControl(c) ? '?' : c)]);
}
