namespace Qcow2Actors.Format;

/// <summary>
/// An immutable copy of a <see cref="Qcow2Header"/>, for code that may look at a header but must not
/// change one it shares (what an open image hands out). It keeps a private copy taken when it is
/// made, so neither its maker nor its reader can change it afterwards; every value is the header's own.
/// </summary>
public sealed class ReadOnlyQcow2Header
{
    private readonly Qcow2Header _header;

    /// <summary>Copies <paramref name="header"/>; later changes to it do not show here.</summary>
    public ReadOnlyQcow2Header(Qcow2Header header)
    {
        ArgumentNullException.ThrowIfNull(header);
        _header = header.Clone();
    }

    /// <inheritdoc cref="Qcow2Header.Version"/>
    public int Version => _header.Version;
    /// <inheritdoc cref="Qcow2Header.BackingFileOffset"/>
    public long BackingFileOffset => _header.BackingFileOffset;
    /// <inheritdoc cref="Qcow2Header.BackingFileSize"/>
    public int BackingFileSize => _header.BackingFileSize;
    /// <inheritdoc cref="Qcow2Header.ClusterBits"/>
    public int ClusterBits => _header.ClusterBits;
    /// <inheritdoc cref="Qcow2Header.Size"/>
    public long Size => _header.Size;
    /// <inheritdoc cref="Qcow2Header.CryptMethod"/>
    public CryptMethod CryptMethod => _header.CryptMethod;
    /// <inheritdoc cref="Qcow2Header.L1Size"/>
    public int L1Size => _header.L1Size;
    /// <inheritdoc cref="Qcow2Header.L1TableOffset"/>
    public long L1TableOffset => _header.L1TableOffset;
    /// <inheritdoc cref="Qcow2Header.RefcountTableOffset"/>
    public long RefcountTableOffset => _header.RefcountTableOffset;
    /// <inheritdoc cref="Qcow2Header.RefcountTableClusters"/>
    public int RefcountTableClusters => _header.RefcountTableClusters;
    /// <inheritdoc cref="Qcow2Header.NbSnapshots"/>
    public int NbSnapshots => _header.NbSnapshots;
    /// <inheritdoc cref="Qcow2Header.SnapshotsOffset"/>
    public long SnapshotsOffset => _header.SnapshotsOffset;
    /// <inheritdoc cref="Qcow2Header.IncompatibleFeatures"/>
    public IncompatibleFeatures IncompatibleFeatures => _header.IncompatibleFeatures;
    /// <inheritdoc cref="Qcow2Header.CompatibleFeatures"/>
    public CompatibleFeatures CompatibleFeatures => _header.CompatibleFeatures;
    /// <inheritdoc cref="Qcow2Header.AutoclearFeatures"/>
    public AutoclearFeatures AutoclearFeatures => _header.AutoclearFeatures;
    /// <inheritdoc cref="Qcow2Header.RefcountOrder"/>
    public int RefcountOrder => _header.RefcountOrder;
    /// <inheritdoc cref="Qcow2Header.HeaderLength"/>
    public int HeaderLength => _header.HeaderLength;
    /// <inheritdoc cref="Qcow2Header.CompressionType"/>
    public CompressionType CompressionType => _header.CompressionType;
    /// <inheritdoc cref="Qcow2Header.UnknownAdditionalFields"/>
    public ReadOnlyMemory<byte> UnknownAdditionalFields => _header.UnknownAdditionalFields;

    /// <inheritdoc cref="Qcow2Header.ClusterSize"/>
    public int ClusterSize => _header.ClusterSize;
    /// <inheritdoc cref="Qcow2Header.RefcountBits"/>
    public int RefcountBits => _header.RefcountBits;
    /// <inheritdoc cref="Qcow2Header.HasExtendedL2"/>
    public bool HasExtendedL2 => _header.HasExtendedL2;
    /// <inheritdoc cref="Qcow2Header.L2Entries"/>
    public int L2Entries => _header.L2Entries;
    /// <inheritdoc cref="Qcow2Header.SubclusterSize"/>
    public int SubclusterSize => _header.SubclusterSize;
    /// <inheritdoc cref="Qcow2Header.IsDirty"/>
    public bool IsDirty => _header.IsDirty;
    /// <inheritdoc cref="Qcow2Header.IsCorrupt"/>
    public bool IsCorrupt => _header.IsCorrupt;
    /// <inheritdoc cref="Qcow2Header.HasExternalDataFile"/>
    public bool HasExternalDataFile => _header.HasExternalDataFile;
    /// <inheritdoc cref="Qcow2Header.IsJournalPending"/>
    public bool IsJournalPending => _header.IsJournalPending;
    /// <inheritdoc cref="Qcow2Header.HasLazyRefcounts"/>
    public bool HasLazyRefcounts => _header.HasLazyRefcounts;
    /// <inheritdoc cref="Qcow2Header.HasBackingFile"/>
    public bool HasBackingFile => _header.HasBackingFile;

    /// <summary>A new mutable copy, for code that builds a header from this one (the copy is the caller's).</summary>
    public Qcow2Header ToHeader() => _header.Clone();
}
