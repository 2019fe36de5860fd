using System.CommandLine;
using System.CommandLine.Help;
using System.Text.RegularExpressions;

namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// docs/CLI.md names every verb q2a has (a <c>### VERB</c> section) and, in that section, every
/// option of the verb and of its subcommands (as <c>`-x</c> or <c>`--long</c> in code), so the
/// reference cannot fall behind the command line. A failure lists exactly what is missing.
/// </summary>
public sealed class CliDocsCompletenessTests
{
    [Fact]
    public void Every_verb_and_option_is_in_docs_CLI_md()
    {
        string docs = File.ReadAllText(DocsPath());
        var sections = Regex.Split(docs, @"^### ", RegexOptions.Multiline)
            .Skip(1)
            .ToDictionary(s => s[..s.IndexOf('\n', StringComparison.Ordinal)].Trim(), s => s, StringComparer.Ordinal);
        var missing = new List<string>();
        foreach (var verb in Verbs.All())
        {
            if (!sections.TryGetValue(verb.Name, out var section))
            {
                missing.Add($"verb '{verb.Name}' (no '### {verb.Name}' section)");
                continue;
            }
            foreach (var (path, option) in Options(verb, verb.Name))
                if (!Regex.IsMatch(section, "`" + Regex.Escape(option) + @"(?=[`\s=,\[\]|\\])"))
                    missing.Add($"{path}: option '{option}'");
        }
        Assert.True(missing.Count == 0, "docs/CLI.md does not name:\n" + string.Join('\n', missing));
    }

    // Every option of the command and its subcommands, by its first name, with the command path.
    private static IEnumerable<(string Path, string Option)> Options(Command command, string path)
    {
        foreach (var option in command.Options.Where(o => o is not HelpOption and not VersionOption))
            yield return (path, option.Name);
        foreach (var sub in command.Subcommands)
            foreach (var item in Options(sub, $"{path} {sub.Name}"))
                yield return item;
    }

    private static string DocsPath()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "docs", "CLI.md");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("docs/CLI.md not found above " + AppContext.BaseDirectory);
    }
}
