using Qcow2Actors.Samples.Embedding;

// dotnet run --project samples/Embedding -- [IMAGE]   (default: embedding-sample.qcow2 in the temp directory)
var path = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "embedding-sample.qcow2");
if (File.Exists(path))
{
    await Console.Error.WriteLineAsync($"'{path}' exists; give a new file name");
    return 1;
}
await EmbeddingSample.RunAsync(path, Console.Out);
return 0;
