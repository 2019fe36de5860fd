using System.CommandLine;
using System.CommandLine.Parsing;

namespace Qcow2Actors.Cli;

/// <summary>
/// What is wrong with a command line, as the one line every verb prints before exit 1.
/// System.CommandLine takes a token it does not know as an argument, so
/// <c>serve --read-onyl x.qcow2</c> would serve a file named <c>--read-onyl</c>; this check
/// runs for every verb before any action, so an unknown option never opens or creates anything.
/// </summary>
internal static class ParseErrors
{
    /// <summary>
    /// The line to print (<c>q2a VERB: unrecognized option '--x'</c>, or the parser's first
    /// error), or null when the command line is good or empty (then the parser shows the help).
    /// </summary>
    public static string? Describe(ParseResult parse, IReadOnlyList<string> args)
    {
        var command = parse.CommandResult.Command;
        var verb = Path(parse.CommandResult);
        // An unknown verb first: `q2a frob --x` is about frob, not --x.
        if (command is RootCommand && args.Count > 0 && !LooksLikeOption(args[0]))
            return $"q2a: unrecognized command '{args[0]}' (q2a --help lists them)";
        if (UnknownOption(parse, args) is { } option) return $"{verb}: unrecognized option '{option}'";
        if (parse.Errors.Count == 0 || args.Count == 0) return null;
        if (command is RootCommand) return $"q2a: unrecognized command '{args[0]}' (q2a --help lists them)";
        if (command.Subcommands.Count > 0 && command.Action is null)
        {
            // A command that only groups others (q2a ctl, q2a ctl tenant): name the word it did not know, or what it takes.
            return parse.UnmatchedTokens.Count > 0
                ? $"{verb}: unrecognized command '{parse.UnmatchedTokens[0]}' ({verb} --help lists them)"
                : $"{verb}: missing command, one of: {string.Join(", ", command.Subcommands.Select(c => c.Name))}";
        }
        return $"{verb}: {parse.Errors[0].Message.ReplaceLineEndings(" ")}";
    }

    /// <summary>
    /// The first option the verb does not have: a token with a leading '-' that the parser left as
    /// an argument (not an option's value, not after <c>--</c>, which ends options as in getopt;
    /// "-" alone is a file name and "-" before a digit a negative number, as resize takes), or a
    /// letter of a getopt cluster like <c>-rX</c> that names no option.
    /// </summary>
    public static string? UnknownOption(ParseResult parse, IReadOnlyList<string> args)
    {
        var optionValues = new HashSet<Token>(ReferenceEqualityComparer.Instance);
        CollectOptionValues(parse.RootCommandResult, optionValues);
        foreach (var token in parse.Tokens)
        {
            if (token.Type == TokenType.DoubleDash) break;
            if (token.Type == TokenType.Argument && !optionValues.Contains(token) && LooksLikeOption(token.Value)) return token.Value;
        }
        return UnknownClusterLetter(parse, args, optionValues);
    }

    // "q2a VERB", or "q2a ctl GROUP VERB" for the commands nested under a verb.
    private static string Path(CommandResult result)
    {
        var names = new List<string>();
        for (SymbolResult? r = result; r is CommandResult c && c.Parent is not null; r = c.Parent) names.Add(c.Command.Name);
        names.Add("q2a");
        names.Reverse();
        return string.Join(' ', names);
    }

    private static bool LooksLikeOption(string text) => text.Length > 1 && text[0] == '-' && !char.IsAsciiDigit(text[1]);

    /// <summary>
    /// The parser splits <c>-rX</c> into <c>-r</c> with the value "X" (then a file name) where
    /// getopt reads option r and option X; walk such clusters as getopt does.
    /// </summary>
    private static string? UnknownClusterLetter(ParseResult parse, IReadOnlyList<string> args, HashSet<Token> optionValues)
    {
        var command = parse.CommandResult.Command;
        var byAlias = new Dictionary<string, Option>(StringComparer.Ordinal);
        foreach (var option in command.Options.Concat(parse.RootCommandResult.Command.Options.Where(o => o.Recursive)))
        {
            byAlias.TryAdd(option.Name, option);
            foreach (var alias in option.Aliases) byAlias.TryAdd(alias, option);
        }
        var values = optionValues.Select(t => t.Value).ToHashSet(StringComparer.Ordinal);
        foreach (var arg in args)
        {
            if (arg == "--") break;
            if (arg.Length < 3 || arg[0] != '-' || arg[1] == '-' || char.IsAsciiDigit(arg[1])) continue;
            if (byAlias.ContainsKey(arg) || values.Contains(arg)) continue;
            for (int i = 1; i < arg.Length; i++)
            {
                if (!byAlias.TryGetValue($"-{arg[i]}", out var option)) return $"-{arg[i]}";
                if (option.ValueType != typeof(bool) && option.Arity.MaximumNumberOfValues > 0) break; // the rest is its value
            }
        }
        return null;
    }

    private static void CollectOptionValues(SymbolResult result, HashSet<Token> into)
    {
        if (result is OptionResult option) foreach (var token in option.Tokens) into.Add(token);
        if (result is CommandResult command)
            foreach (var child in command.Children) CollectOptionValues(child, into);
    }
}
