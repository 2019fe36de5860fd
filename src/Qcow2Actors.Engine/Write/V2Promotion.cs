using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// A version 2 header has no feature bits, so it cannot say "dirty, journal pending". While
/// a v2 image holds journaled changes we therefore store it as v3 (same tables: 16-bit
/// refcounts, standard L2) with the bits set, and remember the original version in a header
/// extension of our own, which QEMU skips as unknown. A clean close, or recovery after a
/// crash, turns it back into v2.
/// </summary>
internal static class V2Promotion
{
    /// <summary>Header extension type "Q2Av": 4 bytes, the version to restore.</summary>
    public const uint ExtensionType = 0x51324176;

    /// <summary>Rewrites <paramref name="block"/> as v3 if it is v2; returns true when it changed.</summary>
    public static bool Promote(ImageHeaderBlock block)
    {
        var h = block.Header;
        if (h.Version != 2) return false;
        h.Version = 3;
        h.HeaderLength = Qcow2Header.V3MinHeaderLength;
        h.RefcountOrder = 4;
        block.UnknownExtensions.RemoveAll(e => e.Type == ExtensionType);
        block.UnknownExtensions.Add(new HeaderExtension(ExtensionType, [0, 0, 0, 2]));
        block.FeatureNames = ImageCreator.FittingFeatureNames(block);
        return true;
    }

    /// <summary>True when <paramref name="block"/> is a v2 image stored as v3 for now.</summary>
    public static bool IsPromoted(ImageHeaderBlock block) => block.UnknownExtensions.Exists(e => e.Type == ExtensionType);

    /// <summary>Turns a promoted header back into v2 (call only once no feature bit is set).</summary>
    public static bool Restore(ImageHeaderBlock block)
    {
        if (block.UnknownExtensions.RemoveAll(e => e.Type == ExtensionType) == 0) return false;
        var h = block.Header;
        h.Version = 2;
        h.HeaderLength = Qcow2Header.V2HeaderLength;
        h.IncompatibleFeatures = IncompatibleFeatures.None;
        h.CompatibleFeatures = CompatibleFeatures.None;
        h.AutoclearFeatures = AutoclearFeatures.None;
        block.FeatureNames = null;
        return true;
    }
}
