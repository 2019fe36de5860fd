using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Hosting;

namespace Qcow2Actors.Samples.Embedding;

/// <summary>
/// The engine inside a generic host: AddQcow2Actors registers the actor system (Akka.Hosting) and
/// an ImageHost; the app creates an image, writes and reads it (directly and as a Stream), closes
/// it, and stops the host. Program.cs runs it; the tests run the same method.
/// </summary>
public static class EmbeddingSample
{
    /// <summary>Bytes written at <see cref="PatternOffset"/> (0xab each).</summary>
    public const int PatternLength = 1 << 20;

    /// <summary>Where the sample's 0xab pattern starts.</summary>
    public const long PatternOffset = 4 << 20;

    /// <summary>Creates <paramref name="path"/> (64 MiB), writes 1 MiB of 0xab at 4 MiB, reads it back, closes cleanly.</summary>
    public static async Task RunAsync(string path, TextWriter log, CancellationToken cancellationToken = default)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddQcow2Actors(o => o.Hocon = "qcow2actors.engine.l2-cache-size = 128");
        using var host = builder.Build();
        await host.StartAsync(cancellationToken);

        var images = host.Services.GetRequiredService<ImageHost>();
        await using (var image = await images.CreateAsync(path, new Qcow2CreateOptions { Size = 64L << 20 }, cancellationToken))
        {
            var pattern = new byte[PatternLength];
            Array.Fill(pattern, (byte)0xab);
            await image.WriteAsync(PatternOffset, pattern, cancellationToken: cancellationToken);
            await image.FlushAsync(cancellationToken);

            // The same bytes through the Stream view.
            await using var stream = image.AsStream();
            stream.Position = PatternOffset;
            var back = new byte[PatternLength];
            await stream.ReadExactlyAsync(back, cancellationToken);
            if (!back.AsSpan().SequenceEqual(pattern))
                throw new InvalidDataException($"'{path}': read back differs from what was written at {PatternOffset}");
            await log.WriteLineAsync($"{path}: wrote and read {PatternLength} bytes at {PatternOffset}, virtual size {image.VirtualSize}");
        }
        await host.StopAsync(cancellationToken);
        await log.WriteLineAsync($"{path}: closed clean");
    }
}
