using Akka.Configuration;
using Microsoft.Data.Sqlite;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>
/// The same behaviours on Akka.Persistence.Sql over SQLite (Microsoft.Data.Sqlite, linq2db
/// provider "SQLite.MS"): the reference the file journal is measured against, and the
/// alternative plugin an embedder may choose.
/// </summary>
public sealed class SqliteJournalTests : JournalBehaviourTests
{
    private string ConnectionString => $"Data Source={Dir.File("journal.db")};Pooling=False";

    protected override string PluginId => "akka.persistence.journal.sql";

    protected override Config PluginConfig => ConfigurationFactory.ParseString($$"""
        akka.persistence.journal.plugin = "akka.persistence.journal.sql"
        akka.persistence.journal.sql {
          class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
          connection-string = "{{ConnectionString}}"
          provider-name = "SQLite.MS"
          auto-initialize = on
        }
        """);

    [Fact]
    public void Sqlite_connections_commit_with_synchronous_full()
    {
        // synchronous is a per-connection pragma that Microsoft.Data.Sqlite's connection string
        // cannot set; what matters is that the library's compiled-in default is FULL (2), so
        // every commit of the journal's own connections is fsynced.
        using var connection = new SqliteConnection(ConnectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA synchronous";
        Assert.Equal(2L, (long)command.ExecuteScalar()!);
    }
}
