namespace Qcow2Actors.Format.Tests;

public class ReadOnlyQcow2HeaderTests
{
    private static Qcow2Header Sample()
    {
        var header = Qcow2Header.CreateNew(1L << 30, clusterBits: 14, extendedL2: true, compressionType: CompressionType.Zstd, lazyRefcounts: true);
        header.L1TableOffset = 3L << 14;
        header.RefcountTableOffset = 1L << 14;
        header.RefcountTableClusters = 1;
        header.NbSnapshots = 2;
        header.SnapshotsOffset = 5L << 14;
        header.HeaderLength = 120;
        header.UnknownAdditionalFields = [1, 2, 3, 4, 5, 6, 7, 8];
        return header;
    }

    [Fact]
    public void The_view_reports_every_value_of_the_header_it_was_made_from()
    {
        var header = Sample();
        var view = new ReadOnlyQcow2Header(header);

        Assert.Equal(header.Version, view.Version);
        Assert.Equal(header.BackingFileOffset, view.BackingFileOffset);
        Assert.Equal(header.BackingFileSize, view.BackingFileSize);
        Assert.Equal(header.ClusterBits, view.ClusterBits);
        Assert.Equal(header.Size, view.Size);
        Assert.Equal(header.CryptMethod, view.CryptMethod);
        Assert.Equal(header.L1Size, view.L1Size);
        Assert.Equal(header.L1TableOffset, view.L1TableOffset);
        Assert.Equal(header.RefcountTableOffset, view.RefcountTableOffset);
        Assert.Equal(header.RefcountTableClusters, view.RefcountTableClusters);
        Assert.Equal(header.NbSnapshots, view.NbSnapshots);
        Assert.Equal(header.SnapshotsOffset, view.SnapshotsOffset);
        Assert.Equal(header.IncompatibleFeatures, view.IncompatibleFeatures);
        Assert.Equal(header.CompatibleFeatures, view.CompatibleFeatures);
        Assert.Equal(header.AutoclearFeatures, view.AutoclearFeatures);
        Assert.Equal(header.RefcountOrder, view.RefcountOrder);
        Assert.Equal(header.HeaderLength, view.HeaderLength);
        Assert.Equal(header.CompressionType, view.CompressionType);
        Assert.Equal(header.UnknownAdditionalFields, view.UnknownAdditionalFields.ToArray());
        Assert.Equal(header.ClusterSize, view.ClusterSize);
        Assert.Equal(header.RefcountBits, view.RefcountBits);
        Assert.True(view.HasExtendedL2);
        Assert.Equal(header.L2Entries, view.L2Entries);
        Assert.Equal(512, view.SubclusterSize);
        Assert.True(view.HasLazyRefcounts);
        Assert.False(view.IsDirty || view.IsCorrupt || view.IsJournalPending || view.HasExternalDataFile || view.HasBackingFile);
    }

    [Fact]
    public void Changing_the_source_or_a_copy_after_the_view_is_made_does_not_change_the_view()
    {
        var header = Sample();
        var view = new ReadOnlyQcow2Header(header);

        header.Size = 1;
        header.IncompatibleFeatures |= IncompatibleFeatures.Corrupt;
        header.UnknownAdditionalFields[0] = 99;
        var copy = view.ToHeader();
        copy.L1TableOffset = 0;
        copy.UnknownAdditionalFields[1] = 99;

        Assert.Equal(1L << 30, view.Size);
        Assert.False(view.IsCorrupt);
        Assert.Equal(3L << 14, view.L1TableOffset);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, view.UnknownAdditionalFields.ToArray());
    }
}
