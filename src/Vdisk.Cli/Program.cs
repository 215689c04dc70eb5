using System.Text;
using Vdisk.Cli;
using Vdisk.Cli.Output;

// Like C stdio: line by line on a terminal, one block at exit when piped, so "abort" loses unflushed output as qemu-io does.
var stdout = new StreamWriter(StdioStream.Output, new UTF8Encoding(false), 1 << 16) { AutoFlush = !Console.IsOutputRedirected };
var stderr = new StreamWriter(StdioStream.Error, new UTF8Encoding(false)) { AutoFlush = true };
int exitCode = CommandLine.Run(args, new CliContext(stdout, stderr, () =>
{
    stderr.Flush();
    NativeAbort.Abort();
}));
stdout.Flush();
return exitCode;
