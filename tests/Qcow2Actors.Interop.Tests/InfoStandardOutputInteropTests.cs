using System.Diagnostics;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a info</c> writes its answer to descriptor 1 itself (StandardOutput.cs, for start-up time): it must
/// still behave as a console writer does where a shell shares the descriptor or the reader goes away.
/// </summary>
public sealed class InfoStandardOutputInteropTests
{
    private static string Dll => Path.Combine(AppContext.BaseDirectory, "q2a.dll");

    [QemuFact]
    public void Info_writes_where_the_shared_descriptor_stands_so_the_next_writer_to_the_file_follows_it()
    {
        using var dir = new TempDir();
        var img = dir.File("a.qcow2");
        QemuImg("create", "-q", "-f", "qcow2", img, "64M").EnsureSuccess();
        var output = dir.File("out.txt");
        // One descriptor for the group (`> out`, not appending): each writer's bytes must land after the last's.
        Run("sh", "-c", "{ echo before; dotnet \"$0\" info \"$1\"; echo after; } > \"$2\"", Dll, img, output).EnsureSuccess();
        var alone = Q2a("info", img).EnsureSuccess().StdOut;
        Assert.StartsWith("image: ", alone, StringComparison.Ordinal);
        Assert.Equal("before\n" + alone + "after\n", File.ReadAllText(output));
    }

    [QemuFact]
    public void Info_whose_reader_is_gone_exits_0_and_says_nothing_as_a_console_writer_would()
    {
        using var dir = new TempDir();
        var img = dir.File("a.qcow2");
        QemuImg("create", "-q", "-f", "qcow2", img, "64M").EnsureSuccess();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Dll, "info", img }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start dotnet");
        // The pipe's only reader closes before the runtime in the child has even started: its write gets EPIPE.
        p.StandardOutput.Close();
        var stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "q2a info did not finish");
        Assert.Equal("", stderr);
        Assert.Equal(0, p.ExitCode);
    }
}
