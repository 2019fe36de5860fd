namespace Qcow2Actors.Engine;

// Qcow2Image as a System.IO.Stream, for code that wants one (CopyToAsync, compression streams,
// parsers of file systems or partition tables).
public sealed partial class Qcow2Image
{
    /// <summary>
    /// A seekable <see cref="Stream"/> over the guest disk: <see cref="Stream.Length"/> is the virtual
    /// size, reads past the end return 0 bytes, and a write that would go past the end is refused
    /// whole (<see cref="NotSupportedException"/>, as a fixed-size <see cref="MemoryStream"/> does):
    /// grow the disk with <see cref="ResizeAsync"/>. Writes follow the image's rules (volatile until
    /// <see cref="Stream.Flush"/>/<see cref="Stream.FlushAsync(CancellationToken)"/>, which flush
    /// the image). The async methods are the image's own; the synchronous ones block on them, as
    /// any synchronous stream over asynchronous I/O must, so prefer the async ones.
    /// Disposing the stream leaves the image open; the stream is not thread-safe (one position).
    /// </summary>
    /// <remarks>Writable only when the image is open read-write (<see cref="IsReadOnly"/> false).</remarks>
    public Stream AsStream()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return new ImageStream(this);
    }

    private sealed class ImageStream(Qcow2Image image) : Stream
    {
        private readonly bool _writable = !image.IsReadOnly;
        private long _position;
        private bool _closed;

        public override bool CanRead => !_closed;
        public override bool CanSeek => !_closed;
        public override bool CanWrite => !_closed && _writable;
        public override long Length
        {
            get
            {
                ThrowIfClosed();
                return image.VirtualSize;
            }
        }

        public override long Position
        {
            get
            {
                ThrowIfClosed();
                return _position;
            }
            set
            {
                ThrowIfClosed();
                ArgumentOutOfRangeException.ThrowIfNegative(value);
                _position = value;
            }
        }

        public override long Seek(long offset, SeekOrigin origin)
        {
            ThrowIfClosed();
            long target = origin switch
            {
                SeekOrigin.Begin => offset,
                SeekOrigin.Current => _position + offset,
                SeekOrigin.End => image.VirtualSize + offset,
                _ => throw new ArgumentException($"unknown SeekOrigin {origin}", nameof(origin)),
            };
            if (target < 0)
                throw new IOException($"seek to {target}, before the start of '{image.Info.FileName}'");
            return _position = target;
        }

        public override void SetLength(long value) =>
            throw new NotSupportedException($"the length of '{image.Info.FileName}' is its virtual size; grow it with Qcow2Image.ResizeAsync");

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            ThrowIfClosed();
            int count = ReadableCount(buffer.Length);
            if (count == 0) return 0;
            await image.ReadAsync(_position, buffer[..count], cancellationToken).ConfigureAwait(false);
            _position += count;
            return count;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            ValidateBufferArguments(buffer, offset, count);
            return ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            CheckWrite(buffer.Length);
            if (buffer.Length == 0) return;
            await image.WriteAsync(_position, buffer, cancellationToken: cancellationToken).ConfigureAwait(false);
            _position += buffer.Length;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            ValidateBufferArguments(buffer, offset, count);
            return WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        }

        public override Task FlushAsync(CancellationToken cancellationToken)
        {
            ThrowIfClosed();
            return image.FlushAsync(cancellationToken).AsTask();
        }

        // The synchronous half of the Stream contract: blocking on the async path is the only way
        // to offer it (the engine's I/O is asynchronous throughout).
        public override int Read(Span<byte> buffer)
        {
            ThrowIfClosed();
            int count = ReadableCount(buffer.Length);
            if (count == 0) return 0;
            var rented = System.Buffers.ArrayPool<byte>.Shared.Rent(count);
            try
            {
                int n = Block(ReadAsync(rented.AsMemory(0, count)));
                rented.AsSpan(0, n).CopyTo(buffer);
                return n;
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            ValidateBufferArguments(buffer, offset, count);
            return Block(ReadAsync(buffer.AsMemory(offset, count)));
        }

        public override void Write(ReadOnlySpan<byte> buffer) => Block(WriteAsync(buffer.ToArray()));

        public override void Write(byte[] buffer, int offset, int count)
        {
            ValidateBufferArguments(buffer, offset, count);
            Block(WriteAsync(buffer.AsMemory(offset, count)));
        }

        public override void Flush() => Block(new ValueTask(FlushAsync(CancellationToken.None)));

        protected override void Dispose(bool disposing)
        {
            _closed = true;
            base.Dispose(disposing);
        }

        private int ReadableCount(int requested)
        {
            long left = image.VirtualSize - _position;
            return left <= 0 ? 0 : (int)Math.Min(requested, left);
        }

        private void CheckWrite(int count)
        {
            ThrowIfClosed();
            if (!_writable)
                throw new NotSupportedException($"'{image.Info.FileName}' is open read-only: its stream cannot write");
            if (count > image.VirtualSize - _position)
                throw new NotSupportedException(
                    $"a write of {count} bytes at {_position} goes past the end of the {image.VirtualSize}-byte disk of '{image.Info.FileName}'; grow it with Qcow2Image.ResizeAsync");
        }

        private void ThrowIfClosed()
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            ObjectDisposedException.ThrowIf(image._disposed != 0, image);
        }

        private static T Block<T>(ValueTask<T> pending) => Device.SyncCompletion.Wait(pending);

        private static void Block(ValueTask pending) => Device.SyncCompletion.Wait(pending);
    }
}
