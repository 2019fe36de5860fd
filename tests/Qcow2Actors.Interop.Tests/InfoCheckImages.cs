using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Interop.Tests;

/// <summary>Builds images of every kind with qemu-img/qemu-io, and patches fields to damage them.</summary>
internal static class InfoCheckImages
{
    /// <summary>Image kinds made by QEMU itself; each must read the same in q2a and qemu-img.</summary>
    public static readonly string[] Kinds =
    [
        "v2", "v3", "cluster512", "cluster2m", "refcount1", "refcount2", "refcount4", "refcount8", "refcount32", "refcount64",
        "extendedl2", "zstd", "zlib-compressed", "overlay", "snapshots", "datafile", "bitmaps", "lazy", "v2-snapshots",
    ];

    public static string Make(TempDir dir, string kind)
    {
        var path = dir.File(kind + ".qcow2");
        void Create(string opts, string size = "64M") =>
            QemuImg(new[] { "create", "-q", "-f", "qcow2" }.Concat(opts.Length > 0 ? ["-o", opts] : Array.Empty<string>()).Concat([path, size]).ToArray()).EnsureSuccess();
        void Io(params string[] cmds) => Run("qemu-io", cmds.SelectMany(c => new[] { "-c", c }).Append(path)).EnsureSuccess();
        switch (kind)
        {
            case "v2": Create("compat=0.10"); Io("write -P 1 0 300k", "write -P 2 5M 64k"); break;
            case "v3": Create(""); Io("write -P 1 0 300k", "write -P 2 5M 64k", "write -z 8M 128k"); break;
            case "cluster512": Create("cluster_size=512", "4M"); Io("write -P 1 0 64k", "write -P 3 1M 4k"); break;
            case "cluster2m": Create("cluster_size=2M", "64M"); Io("write -P 1 0 3M"); break;
            case "refcount1": case "refcount2": case "refcount4": case "refcount8": case "refcount32": case "refcount64":
                Create("refcount_bits=" + kind["refcount".Length..]); Io("write -P 1 0 300k", "write -P 2 9M 64k"); break;
            case "extendedl2": Create("extended_l2=on,cluster_size=64k"); Io("write -P 1 0 4k", "write -z 8k 2k", "write -P 2 1M 100k"); break;
            case "zstd": Create("compression_type=zstd"); Io("write -c -P 1 0 64k", "write -c -P 2 64k 64k", "write -P 3 1M 64k"); break;
            case "zlib-compressed": Create(""); Io("write -c -P 1 0 64k", "write -c -P 7 128k 64k", "write -P 3 1M 64k"); break;
            case "overlay":
                var basePath = dir.File("base-for-overlay.qcow2");
                QemuImg("create", "-q", "-f", "qcow2", basePath, "64M").EnsureSuccess();
                QemuImg("create", "-q", "-f", "qcow2", "-b", basePath, "-F", "qcow2", path).EnsureSuccess();
                Io("write -P 5 64k 64k");
                break;
            case "snapshots":
                Create(""); Io("write -P 1 0 256k");
                QemuImg("snapshot", "-c", "first", path).EnsureSuccess();
                Io("write -P 2 0 64k");
                QemuImg("snapshot", "-c", "second snapshot", path).EnsureSuccess();
                break;
            case "v2-snapshots":
                Create("compat=0.10"); Io("write -P 1 0 128k");
                QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
                Io("write -P 2 0 64k");
                break;
            case "datafile": Create("data_file=" + dir.File("data.raw")); Io("write -P 1 0 200k"); break;
            case "bitmaps":
                Create(""); Io("write -P 1 0 128k");
                QemuImg("bitmap", "--add", path, "b0").EnsureSuccess();
                QemuImg("bitmap", "--add", "-g", "512k", path, "second").EnsureSuccess();
                break;
            case "lazy": Create("lazy_refcounts=on"); Io("write -P 1 0 128k"); break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
        return path;
    }

    public const ulong OffsetMask = 0x00FFFFFFFFFFFE00UL;

    /// <summary>File offset of the first L2 entry of the first L2 table (default 64 KiB clusters).</summary>
    public static long FirstL2Entry(string path) => (long)(ReadU64(path, (long)ReadU64(path, 40)) & OffsetMask);

    /// <summary>File offset of the 16-bit refcount entry of <paramref name="cluster"/> (first refcount block).</summary>
    public static long RefcountEntry(string path, long cluster) => (long)ReadU64(path, (long)ReadU64(path, 48)) + 2 * cluster;

    /// <summary>Offset of the extension with <paramref name="type"/> in cluster 0, or -1.</summary>
    public static long FindExtension(string path, uint type)
    {
        for (long off = ReadU32(path, 100); off + 8 <= 65536;)
        {
            var t = ReadU32(path, off);
            var len = ReadU32(path, off + 4);
            if (t == type) return off;
            if (t == 0) return -1;
            off += 8 + ((len + 7) & ~7L);
        }
        return -1;
    }
}
