using Akka;
using Akka.Actor;
using Akka.Configuration;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Engine;

/// <summary>
/// Holds many open images in one actor system. Each image runs in its own actor subtree
/// under a supervisor that stops a failing image instead of restarting it, so a corrupt
/// or failing image never takes another down. Configured by HOCON: the engine's reference
/// config (embedded) under whatever the caller passes.
/// </summary>
public sealed class ImageHost : IAsyncDisposable
{
    private static readonly Lazy<ImageHost> SharedHost = new(() => Create());
    private readonly IActorRef _supervisor;
    // Images opened for writing and not yet closed: a host stopped under them abandons them (below).
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Qcow2Image, byte> _open = new();
    // False for a host attached to an actor system someone else owns (Attach): it never terminates it.
    private readonly bool _ownsSystem;
    private int _disposed;

    private ImageHost(ActorSystem system, EngineSettings settings, bool ownsSystem, string supervisorName)
    {
        System = system;
        Settings = settings;
        MetadataBudget = settings.MetadataCacheBytes > 0 ? new Read.MetadataCacheBudget(settings.MetadataCacheBytes) : null;
        ThreadPoolFloor.Apply(system.Settings.Config);
        _ownsSystem = ownsSystem;
        _supervisor = system.ActorOf(Props.Create(() => new ImageSupervisor()), supervisorName);
    }

    /// <summary>The engine's reference configuration (hocon/reference.conf, embedded).</summary>
    public static Config ReferenceConfig => FileJournal.ReferenceConfig;

    /// <summary>A process-wide host, created on first use; what <see cref="Qcow2Image.OpenAsync"/> uses for read-write opens.</summary>
    public static ImageHost Shared => SharedHost.Value;

    /// <summary>The actor system the images run in (engine and tests only: embedders own theirs through <see cref="Attach"/>).</summary>
    internal ActorSystem System { get; }

    /// <summary>Engine settings read from the configuration.</summary>
    public EngineSettings Settings { get; }

    /// <summary>
    /// The memory budget for L2 metadata shared by every image this host opens
    /// (<see cref="EngineSettings.MetadataCacheBytes"/>); null when it is 0.
    /// </summary>
    internal Read.MetadataCacheBudget? MetadataBudget { get; }

    /// <summary>Creates a host; <paramref name="config"/> (HOCON) overrides the reference configuration.</summary>
    /// <param name="config">HOCON over the reference configuration; null: the reference alone.</param>
    /// <param name="name">The actor system's name.</param>
    /// <param name="timeProvider">
    /// The clock of the engine's timers (checkpoint interval, table and cache idle timeouts) for
    /// every image of this host; null: the system clock. Tests pass a fake clock to drive them.
    /// </param>
    public static ImageHost Create(Config? config = null, string name = "qcow2actors", TimeProvider? timeProvider = null)
    {
        var full = (config ?? Config.Empty).WithFallback(ReferenceConfig);
        // Read first: a bad setting is refused before an actor system starts.
        var settings = EngineSettings.From(full) with { TimeProvider = timeProvider ?? TimeProvider.System };
        var system = ActorSystem.Create(name, full);
        return new ImageHost(system, settings, ownsSystem: true, "images");
    }

    /// <summary>
    /// Runs images in an actor system the caller owns (Akka.Hosting's, for example); its configuration
    /// must include <see cref="ReferenceConfig"/> as a fallback. The host never terminates that system:
    /// its coordinated shutdown closes every image still open cleanly (checkpointed, journal removed) in
    /// the <c>service-stop</c> phase, and an image still open when the system terminates anyway is
    /// abandoned as a crash would leave it (see <see cref="DisposeAsync"/>). One host per actor system.
    /// </summary>
    /// <exception cref="ArgumentException">The system's configuration lacks the engine's reference configuration.</exception>
    /// <exception cref="InvalidOperationException">An image host is already attached to this actor system.</exception>
    /// <param name="system">The caller's actor system.</param>
    /// <param name="timeProvider">Clock of the engine's timers (checkpoint interval, idle tables); the system clock if null.</param>
    public static ImageHost Attach(ActorSystem system, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(system);
        var config = system.Settings.Config;
        if (!config.HasPath($"{FileJournal.PluginId}.class"))
            throw new ArgumentException(
                $"actor system '{system.Name}' has no '{FileJournal.PluginId}' section: add ImageHost.ReferenceConfig to its configuration as a fallback", nameof(system));
        ImageHost host;
        try
        {
            host = new ImageHost(system, EngineSettings.From(config) with { TimeProvider = timeProvider ?? TimeProvider.System }, ownsSystem: false, AttachedSupervisorName);
        }
        catch (InvalidActorNameException e)
        {
            throw new InvalidOperationException($"an image host is already attached to actor system '{system.Name}'", e);
        }
        CoordinatedShutdown.Get(system).AddTask(CoordinatedShutdown.PhaseServiceStop, "qcow2actors-close-images", async () =>
        {
            await host.CloseOpenImagesAsync().ConfigureAwait(false);
            return Done.Instance;
        });
        _ = system.WhenTerminated.ContinueWith(_ => host.AbandonOpenImages(), TaskScheduler.Default);
        return host;
    }

    private const string AttachedSupervisorName = "qcow2actors-images";

    /// <summary>Creates a host from a HOCON string (see <see cref="Create(Config?, string, TimeProvider?)"/>).</summary>
    public static ImageHost Create(string hocon, string name = "qcow2actors", TimeProvider? timeProvider = null) =>
        Create(ConfigurationFactory.ParseString(hocon), name, timeProvider);

    /// <summary>
    /// Opens an image. Read-only opens use the lock-free read path alone; read-write opens
    /// replay the image's journal if it has one, repair refcounts of an image QEMU left
    /// dirty, and start the image's actors. Every open takes QEMU's image locks first (a write
    /// open: the "write" lock on the image, its data file and its journal).
    /// </summary>
    /// <exception cref="Device.ImageLockException">Another process (q2a or QEMU) holds the image.</exception>
    public async Task<Qcow2Image> OpenAsync(string path, Qcow2OpenOptions? options = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        options ??= new Qcow2OpenOptions { ReadOnly = false };
        if (options.ReadOnly)
            return await Qcow2Image.OpenAsync(path, options.WithJournalSource(JournalSource()).WithMetadataBudget(MetadataBudget), cancellationToken).ConfigureAwait(false);
        options = options.WithMetadataBudget(MetadataBudget);
        if (options.DeviceFactory is null && !File.Exists(path))
            throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        if (options.ForceShare)
            throw new ArgumentException($"Could not open '{path}': force-share=on can only be used with read-only images");
        // The write lock comes first: nothing (journal replay included) touches the image before it is ours.
#pragma warning disable CA2000 // Handed to the image actor, which releases them when the image closes; every failure path below disposes them.
        var locks = new Device.ImageLockSet();
#pragma warning restore CA2000
        Task<OpenedImage>? opening = null;
        try
        {
            if (options.WriteLock is { } held)
            {
                if (held.Mode != Device.LockMode.Writer) throw new ArgumentException("Qcow2OpenOptions.WriteLock must be a LockMode.Writer lock", nameof(options));
                locks.Adopt(path, held);
            }
            else if (options.DeviceFactory is null || File.Exists(path)) locks.Acquire(path, Device.LockMode.Writer);
            var opened = new TaskCompletionSource<OpenedImage>(TaskCreationOptions.RunContinuationsAsynchronously);
            _supervisor.Tell(new ImageSupervisor.Start(ImageActor.Props(path, options, Settings, opened, locks)));
            opening = opened.Task;
            var image = await opening.WaitAsync(cancellationToken).ConfigureAwait(false);
            var result = new Qcow2Image(image, this);
            _open.TryAdd(result, 0);
            return result;
        }
        catch (OperationCanceledException) when (opening is { IsCompleted: false })
        {
            // The actor goes on opening (it may be replaying the journal): the locks stay until it is
            // done, then the image is closed, which releases them.
            _ = CloseWhenOpenedAsync(opening, locks);
            throw;
        }
        catch
        {
            locks.Dispose();
            throw;
        }
    }

    private async Task CloseWhenOpenedAsync(Task<OpenedImage> opening, Device.ImageLockSet locks)
    {
        try
        {
            await new Qcow2Image(await opening.ConfigureAwait(false), this).DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Nobody is waiting for this image any more; the failure was the open's own.
        }
        finally
        {
            locks.Dispose();
        }
    }

    /// <summary>Creates a new qcow2 image (as <c>qemu-img create</c>) and opens it read-write.</summary>
    public async Task<Qcow2Image> CreateAsync(string path, Qcow2CreateOptions options, CancellationToken cancellationToken = default)
    {
        ImageCreator.Create(path, options);
        return await OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// After a clean close: closes the image's journal file and removes it, so a closed image
    /// is a plain qcow2 with nothing beside it (its journal holds nothing at that point).
    /// </summary>
    internal async Task ReleaseJournalAsync(string persistenceId, bool delete)
    {
        if (Settings.JournalPluginId != FileJournal.PluginId) return;
        var journal = Akka.Persistence.Persistence.Instance.Apply(System).JournalFor(Settings.JournalPluginId);
        await journal.Ask<FileJournal.Released>(new FileJournal.Release(persistenceId), TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        if (!delete) return;
        var file = FileJournalPaths.Get(System).Resolve(persistenceId, System.Settings.Config.GetString("akka.persistence.journal.qcow2-file.dir", ""));
        File.Delete(file);
    }

    /// <summary>A write-open image closed: it is no longer this host's to abandon.</summary>
    internal void Forget(Qcow2Image image) => _open.TryRemove(image, out _);

    /// <summary>Where this host's journal plugin keeps an image's journal, for read-only opens of a pending image.</summary>
    private PendingJournalSource JournalSource()
    {
        if (Settings.JournalPluginId != FileJournal.PluginId)
        {
            string plugin = Settings.JournalPluginId;
            return new PendingJournalSource(p => p, 0, p =>
                $"'{p}' has journal records pending in the '{plugin}' journal, which a read-only open cannot replay; run 'q2a recover' (with that journal configured) first");
        }
        var config = System.Settings.Config;
        string dir = config.GetString("akka.persistence.journal.qcow2-file.dir", "") ?? "";
        long max = config.GetByteSize("akka.persistence.journal.qcow2-file.max-record-size", 64L * 1024 * 1024) ?? 64L * 1024 * 1024;
        var paths = FileJournalPaths.Get(System);
        // The persistence id of an image is its full path (ImageActor).
        return new PendingJournalSource(p => paths.Resolve(Path.GetFullPath(p), dir), (int)Math.Clamp(max, 1024, int.MaxValue / 2));
    }

    /// <summary>
    /// Stops the actor system. Close images first (their DisposeAsync) so they end clean: an image
    /// still open is abandoned as a crash would leave it (journal pending, nothing checkpointed),
    /// turns read-only, and gives up its image locks so the next open can recover it.
    /// </summary>
    /// <remarks>
    /// A host made by <see cref="Attach"/> leaves its actor system running: it closes the images
    /// still open cleanly (while the system still runs) and stops its own actors.
    /// </remarks>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_ownsSystem)
        {
            await System.Terminate().ConfigureAwait(false);
        }
        else if (!System.WhenTerminated.IsCompleted)
        {
            await CloseOpenImagesAsync().ConfigureAwait(false);
            await _supervisor.GracefulStop(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        }
        AbandonOpenImages();
    }

    /// <summary>Closes every image still open for writing, as each one's DisposeAsync does; the first failure is rethrown after all were tried.</summary>
    private async Task CloseOpenImagesAsync()
    {
        var closing = _open.Keys.Select(image => image.DisposeAsync().AsTask()).ToList();
        await Task.WhenAll(closing).ConfigureAwait(false);
    }

    private void AbandonOpenImages()
    {
        foreach (var image in _open.Keys) image.Abandon();
        _open.Clear();
    }

    /// <summary>Parent of every image actor: a failure stops that image only.</summary>
    private sealed class ImageSupervisor : ReceiveActor
    {
        public sealed record Start(Props Props);

        private long _next;

        public ImageSupervisor()
        {
            Receive<Start>(m => Context.ActorOf(m.Props, $"image-{++_next}"));
        }

        protected override SupervisorStrategy SupervisorStrategy() =>
            new OneForOneStrategy(_ => Directive.Stop);
    }
}
