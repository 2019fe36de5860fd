using Npgsql;

namespace Qcow2Actors.Tests.Shared;

/// <summary>
/// Databases of their own on a test class's <see cref="PostgresServer"/>: one per test, so cluster sharding's
/// remembered images and the journals of one test never carry over into the next (a remembered image whose file a
/// previous test deleted is started again every second, on every node, for the rest of the class).
/// Linked only into the test projects that reference Npgsql.
/// </summary>
public static class PostgresDatabases
{
    /// <summary>Creates database <paramref name="name"/> (letters, digits and underscores) and returns its connection string.</summary>
    public static async Task<string> CreateAsync(PostgresServer server, string name)
    {
        await using (var db = NpgsqlDataSource.Create(server.ConnectionString))
        await using (var create = db.CreateCommand($"CREATE DATABASE {name}"))
            await create.ExecuteNonQueryAsync();
        return server.ConnectionString.Replace("Database=postgres", $"Database={name}", StringComparison.Ordinal);
    }
}
