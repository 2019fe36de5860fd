using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// Every verb q2a has (<see cref="Verbs.All"/>, so a new verb is covered without editing this file)
/// answers an option it does not have with one stderr line naming it, nothing on stdout, and exit
/// code 1 (ctl's usage errors are exit 2, its documented contract); an unknown verb names the verb.
/// </summary>
public sealed class UnknownOptionEveryVerbTests
{
    public static TheoryData<string> VerbNames => new(Verbs.All().Select(v => v.Name));

    [Theory]
    [MemberData(nameof(VerbNames))]
    public void An_unknown_option_is_one_line_naming_it_wherever_it_stands(string verb)
    {
        string expected = $"q2a {verb}: unrecognized option '--no-such-option'";
        Assert.Equal(expected, Describe(verb, "--no-such-option", "x.img"));
        Assert.Equal(expected, Describe(verb, "x.img", "--no-such-option"));
    }

    [Fact]
    public void Run_as_a_user_runs_it_every_verb_prints_one_line_and_fails()
    {
        var failures = new List<string>();
        foreach (var verb in Verbs.All().Select(v => v.Name).Append("no-such-verb"))
        {
            var (code, stdout, stderr) = QemuTools.Q2a(verb, "--no-such-option", "x.img");
            string expected = verb == "no-such-verb"
                ? "q2a: unrecognized command 'no-such-verb' (q2a --help lists them)"
                : $"q2a {verb}: unrecognized option '--no-such-option'";
            int expectedCode = verb == "ctl" ? 2 : 1;
            if (code != expectedCode || stdout.Length != 0 || stderr != expected + "\n")
                failures.Add($"{verb}: exit {code}, stdout {stdout.Length} chars, stderr '{stderr}'");
        }
        Assert.Empty(failures);
    }

    private static string? Describe(params string[] args) => ParseErrors.Describe(Verbs.Root(args).Parse(args), args);
}
