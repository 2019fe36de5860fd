using System.Text;

namespace Qcow2Actors.Format;

/// <summary>Which feature field a feature name table entry describes.</summary>
public enum FeatureType : byte
{
    /// <summary>incompatible_features.</summary>
    Incompatible = 0,
    /// <summary>compatible_features.</summary>
    Compatible = 1,
    /// <summary>autoclear_features.</summary>
    Autoclear = 2,
}

/// <summary>One feature name table entry.</summary>
/// <param name="Type">Feature field.</param>
/// <param name="Bit">Bit number 0-63.</param>
/// <param name="Name">Human readable name, at most 46 bytes of UTF-8.</param>
public sealed record FeatureNameEntry(FeatureType Type, byte Bit, string Name);

/// <summary>
/// The feature name table header extension (type 0x6803F857): 48-byte entries that let a tool
/// name a bit it does not implement. QEMU prints these names when it refuses an image, which is
/// how our journal-pending bit explains itself to qemu-img.
/// </summary>
public sealed class FeatureNameTable
{
    /// <summary>Size of one entry.</summary>
    public const int EntrySize = 48;
    /// <summary>Offset of the type byte in an entry.</summary>
    public const int TypeOffset = 0;
    /// <summary>Offset of the bit number in an entry.</summary>
    public const int BitOffset = 1;
    /// <summary>Offset of the name in an entry.</summary>
    public const int NameOffset = 2;
    /// <summary>Bytes available for the name (NUL padded; no NUL when all are used).</summary>
    public const int NameLength = 46;
    /// <summary>
    /// Name of Qcow2Actors' journal-pending bit as QEMU will print it ("Unsupported qcow2
    /// feature(s): ..."): it says what to run, within the 46 bytes an entry has.
    /// </summary>
    public const string JournalPendingName = "journal pending: run q2a recover";

    /// <summary>Creates a table from entries (kept in the given order).</summary>
    /// <param name="entries">The entries.</param>
    public FeatureNameTable(IEnumerable<FeatureNameEntry> entries) => Entries = entries.ToList();

    /// <summary>The entries in on-disk order.</summary>
    public IReadOnlyList<FeatureNameEntry> Entries { get; }

    /// <summary>Data length of this table as an extension (entries × 48).</summary>
    public int DataLength => Entries.Count * EntrySize;

    /// <summary>The eight entries qemu-img writes into every v3 image, in its order.</summary>
    public static FeatureNameTable QemuDefault() => new(
    [
        new(FeatureType.Incompatible, 0, "dirty bit"),
        new(FeatureType.Incompatible, 1, "corrupt bit"),
        new(FeatureType.Incompatible, 2, "external data file"),
        new(FeatureType.Incompatible, 3, "compression type"),
        new(FeatureType.Incompatible, 4, "extended L2 entries"),
        new(FeatureType.Compatible, 0, "lazy refcounts"),
        new(FeatureType.Autoclear, 0, "bitmaps"),
        new(FeatureType.Autoclear, 1, "raw external data"),
    ]);

    /// <summary>QEMU's eight entries plus the name of our journal-pending bit 63.</summary>
    public static FeatureNameTable Qcow2ActorsDefault() =>
        new(QemuDefault().Entries.Append(new FeatureNameEntry(FeatureType.Incompatible, 63, JournalPendingName)));

    /// <summary>The name of a bit, or null when the table does not name it.</summary>
    /// <param name="type">Feature field.</param>
    /// <param name="bit">Bit number.</param>
    public string? Lookup(FeatureType type, byte bit)
    {
        foreach (var e in Entries)
            if (e.Type == type && e.Bit == bit) return e.Name;
        return null;
    }

    /// <summary>Decodes the extension data.</summary>
    /// <param name="data">Extension data (a multiple of 48 bytes).</param>
    /// <param name="baseOffset">File offset of <paramref name="data"/>, used in error messages.</param>
    /// <param name="profile">
    /// Under <see cref="ValidationProfile.Open"/> the table must be well formed; otherwise it is read
    /// as QEMU reads it, only to look names up: a ragged tail is ignored, odd types and bits are kept.
    /// </param>
    /// <exception cref="Qcow2FormatException">Length not a multiple of 48, bad type or bit, or a name that is not UTF-8 (open profile).</exception>
    public static FeatureNameTable Read(ReadOnlySpan<byte> data, long baseOffset = 0, ValidationProfile profile = ValidationProfile.Open)
    {
        bool strict = profile == ValidationProfile.Open;
        if (strict && data.Length % EntrySize != 0)
            throw new Qcow2FormatException(Qcow2Rule.FeatureNameTableMalformed, "feature name table length", baseOffset - 4, $"{data.Length} is not a multiple of {EntrySize}", (ulong)data.Length);
        var entries = new List<FeatureNameEntry>(data.Length / EntrySize);
        for (int i = 0; i + EntrySize <= data.Length; i += EntrySize)
        {
            var e = data.Slice(i, EntrySize);
            if (strict && e[TypeOffset] > (byte)FeatureType.Autoclear)
                throw new Qcow2FormatException(Qcow2Rule.FeatureNameTableMalformed, "feature name type", baseOffset + i + TypeOffset, $"{e[TypeOffset]} is not 0, 1 or 2", e[TypeOffset]);
            if (strict && e[BitOffset] > 63)
                throw new Qcow2FormatException(Qcow2Rule.FeatureNameTableMalformed, "feature name bit", baseOffset + i + BitOffset, $"{e[BitOffset]} is not a bit number 0-63", e[BitOffset]);
            var nameBytes = e.Slice(NameOffset, NameLength);
            int nul = nameBytes.IndexOf((byte)0);
            if (nul >= 0) nameBytes = nameBytes[..nul];
            string name = Strings.Decode(nameBytes, "feature name", baseOffset + i + NameOffset, profile);
            entries.Add(new FeatureNameEntry((FeatureType)e[TypeOffset], e[BitOffset], name));
        }
        return new FeatureNameTable(entries);
    }

    /// <summary>Encodes the extension data (names NUL padded to 46 bytes).</summary>
    /// <param name="destination">At least <see cref="DataLength"/> bytes.</param>
    /// <returns>Bytes written.</returns>
    public int Write(Span<byte> destination)
    {
        if (destination.Length < DataLength)
            throw new ArgumentException($"the feature name table needs {DataLength} bytes", nameof(destination));
        for (int i = 0; i < Entries.Count; i++)
        {
            var (type, bit, name) = Entries[i];
            if (bit > 63) throw new InvalidOperationException($"feature bit {bit} is not 0-63");
            var e = destination.Slice(i * EntrySize, EntrySize);
            e.Clear();
            e[TypeOffset] = (byte)type;
            e[BitOffset] = bit;
            if (Encoding.UTF8.GetByteCount(name) > NameLength)
                throw new InvalidOperationException($"feature name \"{name}\" is longer than {NameLength} bytes");
            Encoding.UTF8.GetBytes(name, e.Slice(NameOffset, NameLength));
        }
        return DataLength;
    }
}
