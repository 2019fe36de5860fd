using Akka.Configuration;
using Akka.Dispatch;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The table actors' dispatcher (<c>qcow2actors.table-dispatcher</c>): Akka's thread-pool dispatcher, except that a
/// mailbox scheduled inside an <see cref="InlineDispatch"/> scope runs on the scope's thread, once the send has returned.
/// </summary>
internal sealed class TableDispatcher(MessageDispatcherConfigurator configurator, string id, int throughput, long? throughputDeadline,
    ExecutorServiceFactory executor, TimeSpan shutdownTimeout)
    : Dispatcher(configurator, id, throughput, throughputDeadline, executor, shutdownTimeout)
{
    /// <summary>The dispatcher id table actors run on.</summary>
    public const string ConfigPath = "qcow2actors.table-dispatcher";

    protected override void ExecuteTask(IRunnable run)
    {
        if (!InlineDispatch.TryDefer(run)) base.ExecuteTask(run);
    }
}

/// <summary>Makes the one <see cref="TableDispatcher"/> of an actor system (named by <c>type</c> in its HOCON section).</summary>
internal sealed class TableDispatcherConfigurator : MessageDispatcherConfigurator
{
    private readonly TableDispatcher _dispatcher;

    public TableDispatcherConfigurator(Config config, IDispatcherPrerequisites prerequisites) : base(config, prerequisites)
    {
        long deadline = config.GetTimeSpan("throughput-deadline-time").Ticks;
        _dispatcher = new TableDispatcher(this, config.GetString("id"), config.GetInt("throughput"),
            deadline > 0 ? deadline : null, ConfigureExecutor(), config.GetTimeSpan("shutdown-timeout"));
    }

    public override MessageDispatcher Dispatcher() => _dispatcher;
}
