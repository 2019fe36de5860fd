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
}
