using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Qcow2Actors.Bench.ReadBenchmarks).Assembly).Run(args);
