using System.CommandLine;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// The options every verb that reads an image argument takes for it, as qemu-img spells them:
/// <c>--object TYPE,id=ID,...</c> (repeatable) and <c>--image-opts</c>.
/// </summary>
internal sealed class SourceOptions
{
    private readonly Option<string[]> _objects = new("--object") { Description = "an object the image options refer to: secret,id=ID,data=...|file=... or tls-creds-x509,id=ID,dir=DIR,endpoint=client" };
    private readonly Option<bool> _imageOpts = new("--image-opts") { Description = "the image argument is key=value options (driver=qcow2,file.filename=... or driver=nbd,server.type=...,export=...)" };

    /// <summary>Adds both options to <paramref name="command"/>.</summary>
    public static SourceOptions AddTo(Command command)
    {
        var o = new SourceOptions();
        command.Options.Add(o._objects);
        command.Options.Add(o._imageOpts);
        return o;
    }

    /// <summary>Resolves one image argument of the command line (objects checked first, as qemu-img does).</summary>
    public ImageSpec Resolve(ParseResult parse, string argument, string? format) =>
        ImageSpec.Resolve(argument, parse.GetValue(_imageOpts), format, ImageSpec.Objects(parse.GetValue(_objects)));

    /// <summary>
    /// Resolves the image argument of a verb that rewrites a host file in place (amend, commit,
    /// rebase, resize) or reads one through the file engine (measure, dd, bench): every spelling
    /// that names a host file (a path, <c>json:{...}</c>, <c>--image-opts driver=qcow2,file.filename=...</c>)
    /// gives its path and format; an NBD image is one line saying so.
    /// </summary>
    public ImageSpec ResolveHostFile(ParseResult parse, string argument, string? format, string verb)
    {
        var spec = Resolve(parse, argument, format);
        if (!spec.IsHostFile) throw new CliException($"Could not open '{argument}': q2a {verb} works on host files only, not on an NBD export");
        return spec;
    }
}
