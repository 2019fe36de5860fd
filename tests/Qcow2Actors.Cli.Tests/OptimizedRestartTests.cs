using System.Text;
using Qcow2Actors.Cli;

namespace Qcow2Actors.Cli.Tests;

public sealed class OptimizedRestartTests
{
    private static Func<string, string?> Env(params (string Key, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Key == name).Value;

    [Fact]
    public void Restart_is_wanted_on_linux_only_while_neither_spelling_of_the_switch_is_set()
    {
        Assert.Equal(OperatingSystem.IsLinux(), OptimizedRestart.Wanted(Env()));
        Assert.False(OptimizedRestart.Wanted(Env(("DOTNET_ReadyToRun", "1"))));
        // Once restarted the variable is 0: never a second time.
        Assert.False(OptimizedRestart.Wanted(Env(("DOTNET_ReadyToRun", "0"))));
        Assert.False(OptimizedRestart.Wanted(Env(("COMPlus_ReadyToRun", "1"))));
        Assert.Equal(OperatingSystem.IsLinux(), OptimizedRestart.Wanted(Env(("DOTNET_TieredCompilation", "0"))));
    }

    [Fact]
    public void Command_line_keeps_empty_and_non_ascii_arguments()
    {
        var raw = Encoding.UTF8.GetBytes("dotnet\0/opt/q2a.dll\0serve\0--export-name\0\0/imgs/d\u00e9j\u00e0 vu.qcow2\0");
        Assert.Equal(["dotnet", "/opt/q2a.dll", "serve", "--export-name", "", "/imgs/d\u00e9j\u00e0 vu.qcow2"], OptimizedRestart.CommandLine(raw));
    }

    [Theory]
    [InlineData("")]
    [InlineData("dotnet\0serve")] // cut short: no final NUL
    [InlineData("\0serve\0")] // no program
    public void Command_line_that_cannot_be_rebuilt_exactly_is_refused(string raw) =>
        Assert.Null(OptimizedRestart.CommandLine(Encoding.UTF8.GetBytes(raw)));

    [Fact]
    public void Process_own_command_line_reads_back_with_this_test_host_as_program()
    {
        var args = OptimizedRestart.CommandLine(File.ReadAllBytes("/proc/self/cmdline"));
        Assert.NotNull(args);
        Assert.Equal(Environment.GetCommandLineArgs()[^1], args[^1]);
    }
}
