namespace Qcow2Actors.Nbd.Exports;

// Until the engine's bitmap API is merged (CONTRACTS.md section C): no bitmap can be exported.
public sealed partial class Qcow2Export
{
    private static IReadOnlyList<string> CheckBitmaps(IReadOnlyList<string> names) =>
        names.Count == 0 ? [] : throw new ArgumentException($"Bitmap '{names[0]}' is not found");
}
