using System.Runtime.InteropServices;

namespace Qcow2Actors.Host;

/// <summary>Where the control API listens by default; <c>q2a host</c> and <c>q2a ctl</c> agree on it.</summary>
public static partial class ControlSocket
{
    /// <summary>The environment variable that names the control socket, overriding every default.</summary>
    public const string EnvironmentVariable = "Q2A_CONTROL";

    /// <summary>
    /// <c>$Q2A_CONTROL</c> if set; else <c>/run/q2a/control.sock</c> for root; else
    /// <c>$XDG_RUNTIME_DIR/q2a/control.sock</c>; else <c>/tmp/q2a-UID/control.sock</c>.
    /// </summary>
    public static string DefaultPath()
    {
        var configured = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(configured)) return configured;
        var uid = EffectiveUserId();
        if (uid == 0) return "/run/q2a/control.sock";
        var runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
        if (!string.IsNullOrEmpty(runtime)) return Path.Combine(runtime, "q2a", "control.sock");
        return $"/tmp/q2a-{uid}/control.sock";
    }

    /// <summary>The process's effective user id (geteuid).</summary>
    internal static uint EffectiveUserId() => GetEffectiveUserId();

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEffectiveUserId();
}
