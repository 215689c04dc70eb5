namespace Vdisk.Cli;

public static class CommandLine
{
    public static int Run(string[] args)
    {
        Console.Error.WriteLine("vdisk: no command given");
        return 1;
    }
}
