using System.Buffers;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// A serializer that can hand the file journal an object's bytes as a sequence of the buffers it already holds,
/// so a large event is written from those buffers instead of first being copied into one array.
/// The bytes must be exactly what <c>ToBinary</c> returns for the same object.
/// </summary>
internal interface ISequenceSerializer
{
    /// <summary>The serialized form of <paramref name="obj"/>; valid until the write that asked for it completes.</summary>
    ReadOnlySequence<byte> ToSequence(object obj);
}
