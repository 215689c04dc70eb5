using System.Reflection;

namespace Vdisk.Cli;

/// <summary>The usage text (qemu-img's layout, vdisk's commands) and the version banner.</summary>
internal static class Help
{
    public static string Version
    {
        get
        {
            var v = typeof(Help).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
            int plus = v.IndexOf('+');
            return plus < 0 ? v : v[..plus];
        }
    }

    public static void PrintVersion(TextWriter w)
    {
        w.WriteLine($"vdisk version {Version} (command line compatible with qemu-img and qemu-io 7.2)");
    }

    public static void PrintUsage(TextWriter w)
    {
        PrintVersion(w);
        w.Write("""
            usage: vdisk [standard options] command [command options]
            Copy-on-write virtual disk image utility

                '-h', '--help'       display this help and exit
                '-V', '--version'    output version information and exit

            Command syntax:
              bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename
              check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
              amend [-f fmt] [-p] [-q] -o options filename
              commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] filename
              compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
              convert [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--target-is-zero] [-U] filename [filename2 [...]] output_filename
              create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
              dd [-f fmt] [-O output_fmt] [-U] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
              info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
              io [-f fmt] [-r] [-n] [-t cache] [-U] [-l snapshot] [-c command]... filename
              rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] [-U] -b backing_file [-F backing_fmt] filename
              resize [-f fmt] [-q] [--preallocation=prealloc] [--shrink] filename [+ | -]size
              snapshot [-q] [-U] [-l | -a snapshot | -c snapshot [--vmstate file] | -d snapshot | --dump-vmstate snapshot out] filename
              map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
              measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] [-U] filename]
              serve [-f fmt] [-b addr] [-p port | -k socket] [-x name] [-D text] [-r [-U]] [-t] [-e clients] [-s] [--cache=mode] [--discard=mode] [--detect-zeroes=mode] [--pid-file=file] filename

            Command parameters:
              'filename' is a disk image filename
              'fmt' is the disk image format. It is guessed automatically in most cases
              'cache' is the cache mode used to write the output disk image, the valid
                options are: 'none', 'writeback' (default, except for io), 'writethrough',
                'directsync' and 'unsafe' (default for convert)
              'size' is the disk image size in bytes. Optional suffixes
                'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),
                'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P) are
                supported. 'b' is ignored.
              'options' is a comma separated list of format specific options in a
                name=value format. Use -o help for an overview of the options supported by
                the used format
              'ofmt' is 'human' or 'json'
              'command' is a qemu-io command: read, write, discard, flush, abort (see 'vdisk io -c help')

            Parameters to bench subcommand:
              -c  number of requests (default 75000)
              -d  number of requests in flight at once (default 64)
              -o  offset of the first request
              -s  size of each request (default 4096)
              -S  distance between the starts of consecutive requests (default: the request size)
              -w  write instead of read
              --pattern  byte written by write requests (default 0)
              --flush-interval  flush after this many requests (write only)
              --no-drain  flush without waiting for requests in flight

            Supported formats: 
            """.Replace("\r", ""));
        w.WriteLine(string.Join(' ', Images.ImageFormatRegistry.Default.Formats.Select(f => f.Name)));
        w.WriteLine();
        w.WriteLine("See docs/cli.md for where vdisk differs from qemu-img and qemu-io.");
    }
}
