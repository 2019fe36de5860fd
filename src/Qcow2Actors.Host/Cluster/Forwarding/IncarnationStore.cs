using Npgsql;

namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// The owner lives of each cluster image, in the shared PostgreSQL (table <c>q2a_image_life</c>: image, its current
/// incarnation, whether that life closed clean, and the highest incarnation that did not). An owner takes the next
/// incarnation after it opened the image (it holds the write lock then) and marks it clean after a clean close
/// (checkpointed); a life that is replaced while not marked clean died or was cut off, so writes it acknowledged and
/// nobody flushed may be gone (<see cref="OwnerLife.LostThrough"/>).
/// </summary>
internal sealed class IncarnationStore(string connectionString) : IAsyncDisposable
{
    private const string Table = "q2a_image_life";
    private readonly NpgsqlDataSource _db = NpgsqlDataSource.Create(connectionString);
    private Task? _schema;

    /// <summary>A new life of <paramref name="image"/> begins: the next incarnation, and what is lost before it.</summary>
    public async Task<OwnerLife> BeginAsync(string image, CancellationToken cancellationToken = default)
    {
        await (_schema ??= CreateSchemaAsync()).ConfigureAwait(false);
        await using var command = _db.CreateCommand($"""
            INSERT INTO {Table} AS t (image, incarnation, closed_clean, lost_through) VALUES ($1, 1, false, 0)
            ON CONFLICT (image) DO UPDATE SET
              lost_through = CASE WHEN t.closed_clean THEN t.lost_through ELSE t.incarnation END,
              incarnation = t.incarnation + 1,
              closed_clean = false
            RETURNING incarnation, lost_through
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = image });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new OwnerLife(reader.GetInt64(0), reader.GetInt64(1));
    }

    /// <summary>The life <paramref name="incarnation"/> of <paramref name="image"/> closed clean (only if it is still the current one).</summary>
    public async Task EndCleanAsync(string image, long incarnation, CancellationToken cancellationToken = default)
    {
        await (_schema ??= CreateSchemaAsync()).ConfigureAwait(false);
        await using var command = _db.CreateCommand($"UPDATE {Table} SET closed_clean = true WHERE image = $1 AND incarnation = $2");
        command.Parameters.Add(new NpgsqlParameter { Value = image });
        command.Parameters.Add(new NpgsqlParameter { Value = incarnation });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task CreateSchemaAsync()
    {
        await using var connection = await _db.OpenConnectionAsync().ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync().ConfigureAwait(false);
        // Nodes start together: one creates the table at a time (IF NOT EXISTS alone can fail when two race).
        await using (var lockCommand = new NpgsqlCommand("SELECT pg_advisory_xact_lock(7102416)", connection, transaction))
            await lockCommand.ExecuteNonQueryAsync().ConfigureAwait(false);
        await using (var command = new NpgsqlCommand($"""
            CREATE TABLE IF NOT EXISTS {Table} (
              image text PRIMARY KEY,
              incarnation bigint NOT NULL,
              closed_clean boolean NOT NULL,
              lost_through bigint NOT NULL)
            """, connection, transaction))
            await command.ExecuteNonQueryAsync().ConfigureAwait(false);
        await transaction.CommitAsync().ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _db.DisposeAsync();
}
