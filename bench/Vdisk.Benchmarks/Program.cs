using BenchmarkDotNet.Running;

// Micro-benchmarks of the qcow2 hot paths, in memory (no file system noise). For side-by-side comparisons with
// the QEMU tools, see bench/run-bench.sh. Run: dotnet run -c Release --project bench/Vdisk.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
