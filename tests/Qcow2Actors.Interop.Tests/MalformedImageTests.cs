using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.InfoCheckImages;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// Damaged images must be refused by <c>q2a info</c> with exit 1 and one line naming the field,
/// or be reported by <c>q2a check</c> with exit 2; never a hang, crash or stack trace.
/// </summary>
public sealed class MalformedImageTests
{
    public enum Outcome { Refused, Corrupt }

    /// <param name="Field">Text the one-line refusal must contain (the field name).</param>
    /// <param name="QemuRefusesToo">qemu-img -f qcow2 info refuses the same image.</param>
    private sealed record Case(Action<string> Patch, Outcome Expected, string Field, bool QemuRefusesToo);

    private const string JournalPendingName = Qcow2Actors.Format.FeatureNameTable.JournalPendingName;

    private static void Or64(string p, long off, ulong bits) => WriteU64(p, off, ReadU64(p, off) | bits);

    private static void NameFeature(string p, int bit, string name)
    {
        var table = FindExtension(p, 0x6803F857);
        var entry = new byte[48];
        entry[0] = 0;
        entry[1] = (byte)bit;
        System.Text.Encoding.ASCII.GetBytes(name).CopyTo(entry, 2);
        WriteAt(p, table + 8, entry);
    }

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["bad magic"] = new(p => WriteU32(p, 0, 0x12345678), Outcome.Refused, "magic", true),
        ["version 4"] = new(p => WriteU32(p, 4, 4), Outcome.Refused, "version", true),
        ["cluster_bits 8"] = new(p => WriteU32(p, 20, 8), Outcome.Refused, "cluster_bits", true),
        ["cluster_bits 22"] = new(p => WriteU32(p, 20, 22), Outcome.Refused, "cluster_bits", true),
        ["header_length 100"] = new(p => WriteU32(p, 100, 100), Outcome.Refused, "header_length", true),
        ["header_length unaligned"] = new(p => WriteU32(p, 100, 108), Outcome.Refused, "header_length", true),
        ["header_length beyond cluster"] = new(p => WriteU32(p, 100, 70000), Outcome.Refused, "header_length", true),
        ["refcount_order 7"] = new(p => WriteU32(p, 96, 7), Outcome.Refused, "refcount_order", true),
        // Our bit with no journal beside the image: q2a cannot replay it and says how to rebuild.
        ["journal pending bit 63 named, journal missing"] = new(p => { Or64(p, 72, 1UL << 63); NameFeature(p, 63, JournalPendingName); },
            Outcome.Refused, "q2a recover --rebuild", true),
        ["unknown incompatible bit 40 unnamed"] = new(p => Or64(p, 72, 1UL << 40), Outcome.Refused, "Unknown incompatible feature: 10000000000", true),
        ["unknown incompatible bit 9 named"] = new(p => { Or64(p, 72, 1UL << 9); NameFeature(p, 9, "future thing"); }, Outcome.Refused, "future thing", true),
        ["compression type byte 2"] = new(p => { Or64(p, 72, 8); WriteAt(p, 104, [2]); }, Outcome.Refused, "compression_type", true),
        ["compression bit without byte"] = new(p => Or64(p, 72, 8), Outcome.Refused, "incompatible_features", true),
        ["raw data file bit without data file"] = new(p => WriteU64(p, 88, 2), Outcome.Refused, "autoclear_features", false),
        ["crypt_method 3"] = new(p => WriteU32(p, 32, 3), Outcome.Refused, "crypt_method", true),
        ["backing_file_size 2000"] = new(p => { WriteU64(p, 8, 0x300); WriteU32(p, 16, 2000); }, Outcome.Refused, "backing_file_size", true),
        ["backing offset outside cluster 0"] = new(p => { WriteU64(p, 8, 0x20000); WriteU32(p, 16, 10); }, Outcome.Refused, "backing_file_offset", true),
        ["l1 offset misaligned"] = new(p => WriteU64(p, 40, ReadU64(p, 40) + 8), Outcome.Refused, "l1_table_offset", true),
        ["l1_size 2^30"] = new(p => WriteU32(p, 36, 1u << 30), Outcome.Refused, "l1_size", true),
        ["l1_size too small for the size"] = new(p => WriteU64(p, 24, 1UL << 40), Outcome.Refused, "l1_size", true),
        ["refcount_table_clusters 0"] = new(p => WriteU32(p, 56, 0), Outcome.Refused, "refcount_table_clusters", true),
        ["refcount_table_clusters huge"] = new(p => WriteU32(p, 56, 1u << 20), Outcome.Refused, "refcount_table_clusters", true),
        ["nb_snapshots 100000"] = new(p => WriteU32(p, 60, 100000), Outcome.Refused, "nb_snapshots", true),
        ["extension length overruns the cluster"] = new(p => WriteU32(p, FindExtension(p, 0x6803F857) + 4, 0x20000), Outcome.Refused, "header extension length", true),
        ["duplicate extension"] = new(p =>
        {
            var ext = new byte[] { 0xE2, 0x79, 0x2A, 0xCA, 0, 0, 0, 5, (byte)'q', (byte)'c', (byte)'o', (byte)'w', (byte)'2', 0, 0, 0 };
            var rest = ReadAt(p, 112, 4096);
            WriteAt(p, 112, [.. ext, .. ext, .. rest[..(4096 - 32)]]);
        }, Outcome.Refused, "header extension type", false),
        ["snapshot extra data too large"] = new(p => WriteU32(p, (long)ReadU64(p, 64) + 36, 5000), Outcome.Refused, "extra_data_size", true),
        ["snapshot table truncated past the end of the file"] = new(p => WriteU64(p, 64, (((ulong)new FileInfo(p).Length + 0xFFFF) & ~0xFFFFUL) + 0x10000), Outcome.Corrupt, "", false),
        ["snapshot table offset unaligned"] = new(p => WriteU64(p, 64, ReadU64(p, 64) + 8), Outcome.Refused, "snapshots_offset", true),
        ["l1 offset past the end of the file"] = new(p => WriteU64(p, 40, 0x10000000), Outcome.Corrupt, "", false),
        ["l2 offset past the end of the file"] = new(p => WriteU64(p, (long)ReadU64(p, 40), (1UL << 63) | 0x40000000), Outcome.Corrupt, "", false),
        ["l2 offset misaligned"] = new(p => { var l1 = (long)ReadU64(p, 40); WriteU64(p, l1, ReadU64(p, l1) + 0x200); }, Outcome.Corrupt, "", false),
        ["l2 entry misaligned"] = new(p => { var e = FirstL2Entry(p); WriteU64(p, e, ReadU64(p, e) + 0x200); }, Outcome.Corrupt, "", false),
        ["compressed entry with copied"] = new(p => { var e = FirstL2Entry(p); WriteU64(p, e, (3UL << 62) | (ReadU64(p, e) & 0xFFFFFFFFFF)); }, Outcome.Corrupt, "", false),
        ["l1 entry reserved bits"] = new(p => Or64(p, (long)ReadU64(p, 40), 1UL << 56), Outcome.Corrupt, "", false),
        ["refcount table entry reserved bits"] = new(p => Or64(p, (long)ReadU64(p, 48), 1), Outcome.Corrupt, "", false),
        ["refcount block outside the image"] = new(p => WriteU64(p, (long)ReadU64(p, 48) + 8, 0x40000000), Outcome.Corrupt, "", false),
        ["l2 table overlapping the refcount table"] = new(p => { var l1 = (long)ReadU64(p, 40); WriteU64(p, l1, (1UL << 63) | ReadU64(p, 48)); }, Outcome.Corrupt, "", false),
    };

    public static TheoryData<string> Names() => new(Cases.Keys);

    [QemuTheory]
    [MemberData(nameof(Names))]
    public void Malformed_image_is_refused_in_one_line_or_reported_corrupt_never_crashing(string name)
    {
        var c = Cases[name];
        using var dir = new TempDir();
        var path = Make(dir, name.Contains("snapshot", StringComparison.Ordinal) ? "snapshots" : "v3");
        c.Patch(path);

        var info = Q2a("info", "--output=json", path);
        var check = Q2a("check", path);
        foreach (var r in new[] { info, check })
        {
            Assert.DoesNotContain("   at ", r.StdErr, StringComparison.Ordinal);
            Assert.DoesNotContain("Unhandled exception", r.StdErr, StringComparison.Ordinal);
        }
        if (c.Expected == Outcome.Refused)
        {
            Assert.Equal(1, info.ExitCode);
            var lines = info.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Single(lines);
            Assert.StartsWith("q2a: Could not open", lines[0], StringComparison.Ordinal);
            Assert.Contains(c.Field, lines[0], StringComparison.Ordinal);
            Assert.Equal("", info.StdOut);
            if (c.QemuRefusesToo)
                Assert.Equal(1, QemuImg("info", "-f", "qcow2", path).ExitCode);
        }
        else
        {
            Assert.Equal(0, info.ExitCode);
            Assert.Equal(2, check.ExitCode);
            // Where qemu-img can check it, the counts and exit code agree exactly.
            CheckInteropTests.AssertSameCheck(path);
        }
    }

    [QemuFact]
    public void A_journal_pending_image_without_its_journal_is_refused_by_qemu_naming_recover_and_by_q2a_naming_rebuild()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        Or64(path, 72, 1UL << 63);
        NameFeature(path, 63, JournalPendingName);
        Assert.Contains($"Unsupported qcow2 feature(s): {JournalPendingName}", QemuImg("info", path).StdErr, StringComparison.Ordinal);
        var q2a = Q2a("info", path);
        Assert.Equal(1, q2a.ExitCode);
        var line = Assert.Single(q2a.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("is missing", line, StringComparison.Ordinal);
        Assert.Contains("q2a recover --rebuild", line, StringComparison.Ordinal);
    }
}
