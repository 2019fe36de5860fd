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
    public void The_restart_turns_precompiled_code_and_tiering_off_but_keeps_a_tiering_setting_already_made()
    {
        Assert.Equal(["DOTNET_ReadyToRun=0", "DOTNET_TieredCompilation=0"], OptimizedRestart.Additions(Env()));
        Assert.Equal(["DOTNET_ReadyToRun=0"], OptimizedRestart.Additions(Env(("DOTNET_TieredCompilation", "1"))));
        Assert.Equal(["DOTNET_ReadyToRun=0"], OptimizedRestart.Additions(Env(("COMPlus_TieredCompilation", "1"))));
    }

    [Fact]
    public void Strings_keep_empty_and_non_utf8_arguments_byte_for_byte()
    {
        byte[] latin1Name = [.. "/imgs/d"u8, 0xE9, .. "j.qcow2"u8]; // 'é' in Latin-1: not UTF-8
        byte[] raw = [.. "dotnet\0/opt/q2a.dll\0serve\0--export-name\0\0"u8, .. latin1Name, 0];
        var strings = OptimizedRestart.Strings(raw);
        Assert.NotNull(strings);
        Assert.Equal(6, strings.Count);
        Assert.Equal("serve"u8.ToArray(), strings[2]);
        Assert.Empty(strings[4]);
        Assert.Equal(latin1Name, strings[5]);
    }

    [Theory]
    [InlineData("")]
    [InlineData("dotnet\0serve")] // cut short: no final NUL
    public void Strings_of_a_file_that_is_not_whole_are_refused(string raw) =>
        Assert.Null(OptimizedRestart.Strings(Encoding.UTF8.GetBytes(raw)));

    [Fact]
    public void This_process_command_line_and_environment_read_back_from_proc()
    {
        var argv = OptimizedRestart.Strings(File.ReadAllBytes("/proc/self/cmdline"));
        Assert.NotNull(argv);
        Assert.Equal(Environment.GetCommandLineArgs()[^1], Encoding.UTF8.GetString(argv[^1]));
        var env = OptimizedRestart.Strings(File.ReadAllBytes("/proc/self/environ"));
        Assert.NotNull(env);
        var path = Environment.GetEnvironmentVariable("PATH");
        Assert.Contains(env, e => Encoding.UTF8.GetString(e) == "PATH=" + path);
    }

    [Fact]
    public void A_process_that_is_not_q2a_is_never_replaced()
    {
        // The test host runs with DOTNET_ReadyToRun unset or set; either way it must come back here.
        Assert.Equal(OptimizedRestart.Outcome.Continue, OptimizedRestart.Restart(TextWriter.Null, new TaskCompletionSource().Task));
    }
}
