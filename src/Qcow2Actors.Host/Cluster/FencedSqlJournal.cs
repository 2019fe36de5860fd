using System.Collections.Concurrent;
using System.Collections.Immutable;
using Akka.Configuration;
using Akka.Persistence;
using Akka.Persistence.Journal;
using Akka.Persistence.Sql.Journal;
using Npgsql;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// Akka.Persistence.Sql's journal on PostgreSQL with an owner generation per persistence id, so that of two
/// processes that both believe they own an image, only the newer one's appends reach the journal.
/// </summary>
/// <remarks>
/// <para>Every recovery of a persistence id (an image being opened for writing: the engine's journal actor
/// recovers before it accepts a request) first takes the next generation in the table
/// <c>q2a_owner_generation</c> (one row per id: generation, owner, time) and only then reads the journal. Each
/// event this journal appends carries the generation it holds for that id as the tag
/// <c>q2a-generation:N</c>, and a trigger on the journal table refuses, inside the inserting transaction, any row
/// whose generation is not the current one. Taking a generation locks that row; the trigger reads it
/// <c>FOR SHARE</c>, so an append either committed before the new owner's generation was taken (and the new owner's
/// replay, which runs after, sees it) or is refused: a stale owner can never add a record the new owner did not
/// replay. Deleting messages (the engine's checkpoint truncation) checks the generation the same way while holding
/// that row <c>FOR SHARE</c> across the delete.</para>
/// <para>Configuration: Akka.Persistence.Sql's (<c>connection-string</c>, <c>provider-name</c> =
/// <c>PostgreSQL.15</c> or another PostgreSQL one, <c>table-mapping = default</c>); <c>tag-write-mode</c> is forced to
/// <c>Csv</c> (the trigger reads the row's own tags column), and <c>owner</c> names this process in the
/// generation table (default: host name, process id and actor system name).</para>
/// </remarks>
public sealed class FencedSqlJournal : SqlWriteJournal
{
    /// <summary>The tag prefix carrying an append's generation.</summary>
    public const string GenerationTagPrefix = "q2a-generation:";

    /// <summary>The table holding each persistence id's current owner generation.</summary>
    public const string GenerationTable = "q2a_owner_generation";

    private readonly NpgsqlDataSource _db;
    private readonly string _journalTable;
    private readonly string _owner;
    private readonly ConcurrentDictionary<string, long> _generations = new(StringComparer.Ordinal);
    private Task? _schema;

    /// <summary>Called by Akka.Persistence with this plugin's configuration section.</summary>
    public FencedSqlJournal(Akka.Configuration.Config config) : base(Force(config))
    {
        var provider = config.GetString("provider-name", "") ?? "";
        if (!provider.StartsWith("PostgreSQL", StringComparison.OrdinalIgnoreCase))
            throw new ConfigurationException($"FencedSqlJournal: provider-name '{provider}' is not PostgreSQL (the owner generation is a PostgreSQL trigger)");
        var mapping = config.GetString("table-mapping", "default") ?? "default";
        if (mapping != "default")
            throw new ConfigurationException($"FencedSqlJournal: table-mapping '{mapping}' is not supported; use 'default'");
        string schema = config.GetString("default.schema-name", null) is { Length: > 0 } s ? s : "public";
        string table = config.GetString("default.journal.table-name", "journal") ?? "journal";
        _journalTable = $"{Quote(schema)}.{Quote(table)}";
        _owner = config.GetString("owner", "") is { Length: > 0 } o ? o
            : $"{Environment.MachineName}/{Environment.ProcessId}/{Context.System.Name}";
        _db = NpgsqlDataSource.Create(config.GetString("connection-string", ""));
    }

    /// <summary>The generation this journal holds for <paramref name="persistenceId"/> (0: none taken yet).</summary>
    public long GenerationOf(string persistenceId) => _generations.TryGetValue(persistenceId, out var g) ? g : 0;

    private static Akka.Configuration.Config Force(Akka.Configuration.Config config) =>
        ConfigurationFactory.ParseString("tag-write-mode = Csv").WithFallback(config);

    private static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <inheritdoc />
    protected override void PostStop()
    {
        base.PostStop();
        _db.Dispose();
    }

    /// <summary>
    /// Recovery starts here (Akka.Persistence reads the highest sequence number before it replays): take the next
    /// generation first, so every append of an older owner that is not already committed is refused from now on.
    /// </summary>
    public override async Task<long> ReadHighestSequenceNrAsync(string persistenceId, long fromSequenceNr, CancellationToken cancellationToken = default)
    {
        await EnsureSchemaAsync().ConfigureAwait(false);
        await using (var command = _db.CreateCommand($"""
            INSERT INTO {GenerationTable} (persistence_id, generation, owner, taken_at) VALUES ($1, 1, $2, now())
            ON CONFLICT (persistence_id) DO UPDATE SET generation = {GenerationTable}.generation + 1, owner = EXCLUDED.owner, taken_at = now()
            RETURNING generation
            """))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = persistenceId });
            command.Parameters.Add(new NpgsqlParameter { Value = _owner });
            long generation = (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
            _generations[persistenceId] = generation;
        }
        return await base.ReadHighestSequenceNrAsync(persistenceId, fromSequenceNr, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override Task<IImmutableList<Exception>> WriteMessagesAsync(IEnumerable<AtomicWrite> messages, CancellationToken cancellationToken = default)
    {
        var tagged = messages.Select(write =>
        {
            if (!_generations.TryGetValue(write.PersistenceId, out var generation)) return write;
            var tag = GenerationTagPrefix + generation.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var events = ((IImmutableList<IPersistentRepresentation>)write.Payload)
                .Select(e => e.WithPayload(e.Payload is Tagged t
                    ? new Tagged(t.Payload, t.Tags.Where(x => !x.StartsWith(GenerationTagPrefix, StringComparison.Ordinal)).Append(tag))
                    : new Tagged(e.Payload, [tag])))
                .ToImmutableList();
            return new AtomicWrite(events);
        }).ToList();
        return base.WriteMessagesAsync(tagged, cancellationToken);
    }

    /// <summary>A delete (checkpoint truncation) by an owner whose generation is no longer current is refused.</summary>
    protected override async Task DeleteMessagesToAsync(string persistenceId, long toSequenceNr, CancellationToken cancellationToken = default)
    {
        await EnsureSchemaAsync().ConfigureAwait(false);
        await using var connection = await _db.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        long? current;
        await using (var command = new NpgsqlCommand($"SELECT generation FROM {GenerationTable} WHERE persistence_id = $1 FOR SHARE", connection, transaction))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = persistenceId });
            current = (long?)await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        }
        long mine = GenerationOf(persistenceId);
        if (current is { } c && c != mine)
            throw new StaleOwnerException(persistenceId, mine, c);
        // The row stays locked (FOR SHARE) until the delete is done: no new owner takes over halfway.
        await base.DeleteMessagesToAsync(persistenceId, toSequenceNr, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    private Task EnsureSchemaAsync() => _schema ??= CreateSchemaAsync();

    private async Task CreateSchemaAsync()
    {
        const string function = "q2a_owner_fence_check";
        await using var connection = await _db.OpenConnectionAsync().ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync().ConfigureAwait(false);
        // Nodes start together: one of them creates the table and trigger at a time.
        await using (var lockCommand = new NpgsqlCommand("SELECT pg_advisory_xact_lock(7102413)", connection, transaction))
            await lockCommand.ExecuteNonQueryAsync().ConfigureAwait(false);
        await using var command = new NpgsqlCommand($$"""
            CREATE TABLE IF NOT EXISTS {{GenerationTable}} (
              persistence_id varchar(255) PRIMARY KEY,
              generation bigint NOT NULL,
              owner text NOT NULL,
              taken_at timestamptz NOT NULL);
            CREATE OR REPLACE FUNCTION {{function}}() RETURNS trigger LANGUAGE plpgsql AS $fence$
            DECLARE
              current_generation bigint;
              claimed bigint;
            BEGIN
              SELECT generation INTO current_generation FROM {{GenerationTable}} WHERE persistence_id = NEW.persistence_id FOR SHARE;
              IF current_generation IS NULL THEN
                RETURN NEW;
              END IF;
              claimed := substring(coalesce(NEW.tags, '') from '{{GenerationTagPrefix}}([0-9]+)')::bigint;
              IF claimed IS DISTINCT FROM current_generation THEN
                RAISE EXCEPTION 'stale owner: journal % is at owner generation %, this append carries %',
                  NEW.persistence_id, current_generation, coalesce(claimed::text, 'none')
                  USING ERRCODE = 'P0001';
              END IF;
              RETURN NEW;
            END
            $fence$;
            CREATE OR REPLACE TRIGGER q2a_owner_fence BEFORE INSERT ON {{_journalTable}}
              FOR EACH ROW EXECUTE FUNCTION {{function}}();
            """, connection, transaction);
        await command.ExecuteNonQueryAsync().ConfigureAwait(false);
        await transaction.CommitAsync().ConfigureAwait(false);
    }
}

/// <summary>A journal operation refused because another process has since taken over the journal (a newer owner generation).</summary>
public sealed class StaleOwnerException(string persistenceId, long held, long current)
    : InvalidOperationException($"stale owner: journal '{persistenceId}' is at owner generation {current}, this process holds {held}")
{
    /// <summary>The generation this process holds.</summary>
    public long Held { get; } = held;

    /// <summary>The journal's current generation.</summary>
    public long Current { get; } = current;
}
