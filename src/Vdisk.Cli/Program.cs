return Vdisk.Cli.CommandLine.Run(args);
