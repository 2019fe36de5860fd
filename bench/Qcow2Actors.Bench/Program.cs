using System.Globalization;
using BenchmarkDotNet.Running;

if (args.Length > 0 && args[0] == "--compare-writes")
    return await Qcow2Actors.Bench.WriteComparison.RunAsync(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 3);
if (args.Length > 0 && args[0] == "--host-images")
    return await Qcow2Actors.Bench.HostImagesBench.RunAsync(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(Qcow2Actors.Bench.ReadBenchmarks).Assembly).Run(args);
return 0;
