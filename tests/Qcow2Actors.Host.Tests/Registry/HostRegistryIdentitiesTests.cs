using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Hosting;
using Qcow2Actors.Nbd;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Registry;

/// <summary>Which tenant an NBD client's certificate is (qcow2actors.host.tenants.NAME.identities), at start and after SIGHUP.</summary>
public sealed class HostRegistryIdentitiesTests
{
    private static NbdClientIdentity Certificate(string subject, params string[] alternativeNames) =>
        new() { Tls = true, Subject = subject, AlternativeNames = alternativeNames };

    [Fact]
    public async Task A_certificate_is_the_tenant_naming_its_subject_else_one_naming_a_san_and_a_reload_changes_it()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path, """
            qcow2actors.host.tenants {
              acme { identities = ["CN=acme-vm1,O=Acme"] }
              globex { identities = ["vm1.globex.example", "CN=shared-name,O=Globex"] }
            }
            """);
        var registry = host.Registry;
        Assert.Equal("acme", registry.ResolveTenant(Certificate("CN=acme-vm1, O=Acme")));
        Assert.Equal("globex", registry.ResolveTenant(Certificate("CN=whatever, O=Globex", "VM1.globex.example")));
        // The subject wins over a SAN another tenant names.
        Assert.Equal("acme", registry.ResolveTenant(Certificate("CN=acme-vm1, O=Acme", "vm1.globex.example")));
        Assert.Null(registry.ResolveTenant(Certificate("CN=stranger, O=Nobody", "stranger.example")));
        Assert.Null(registry.ResolveTenant(new NbdClientIdentity { Tls = false }));
        // A revoked tenant's certificates are no one's until it is restored.
        await host.PostAsync<TenantReply>(Routes.TenantActionPath("acme", revoke: true));
        Assert.Null(registry.ResolveTenant(Certificate("CN=acme-vm1, O=Acme")));
        await host.PostAsync<TenantReply>(Routes.TenantActionPath("acme", revoke: false));
        Assert.Equal("acme", registry.ResolveTenant(Certificate("CN=acme-vm1, O=Acme")));

        var conf = Path.Combine(dir.Path, "host.conf");
        await File.WriteAllTextAsync(conf, """
            qcow2actors.host.tenants {
              acme { identities = ["CN=acme-vm2,O=Acme"] }
              globex { }
            }
            """);
        await HostApplication.ReloadAsync(host.App.Services.GetRequiredService<HostSettings>(), registry, NullLogger.Instance);
        Assert.Null(registry.ResolveTenant(Certificate("CN=acme-vm1, O=Acme")));
        Assert.Equal("acme", registry.ResolveTenant(Certificate("CN=acme-vm2, O=Acme")));
        Assert.Null(registry.ResolveTenant(Certificate("CN=whatever, O=Globex", "vm1.globex.example")));
    }

    [Fact]
    public void Bad_tls_settings_are_one_line_naming_the_key()
    {
        using var dir = new TempDir();
        var conf = Path.Combine(dir.Path, "bad.conf");
        File.WriteAllText(conf, "qcow2actors.host.nbd.tls.mode = sometimes");
        Assert.Equal("qcow2actors.host.nbd.tls.mode 'sometimes' is invalid (off, optional or required)",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path)).Message);
        File.WriteAllText(conf, "qcow2actors.host.nbd.tls.mode = required");
        Assert.Equal("qcow2actors.host.nbd.tls.x509-dir is required when qcow2actors.host.nbd.tls.mode is required",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path)).Message);
        File.WriteAllText(conf, $"qcow2actors.host.nbd.tls {{ mode = optional, x509-dir = \"{dir.Path}\" }}");
        Assert.Equal($"qcow2actors.host.nbd.tls.x509-dir: {Path.Combine(dir.Path, "ca-cert.pem")}: file not found",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path)).Message);
        File.WriteAllText(conf, "qcow2actors.host.tenants.acme.identities = [\"\"]");
        Assert.Equal("qcow2actors.host.tenants.acme.identities must not hold an empty name",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path)).Message);
    }

    [Theory]
    [InlineData("CN=vm1,O=Acme", "CN=vm1, O=Acme")]
    [InlineData("vm1.example", "VM1.example")]
    public void An_identity_listed_for_two_tenants_is_refused_naming_both(string first, string second)
    {
        using var dir = new TempDir();
        var conf = Path.Combine(dir.Path, "twice.conf");
        File.WriteAllText(conf, $$"""
            qcow2actors.host.tenants {
              acme { identities = ["{{first}}"] }
              globex { identities = ["other.example", "{{second}}"] }
            }
            """);
        Assert.Equal($"qcow2actors.host.tenants: identity '{second}' is listed for both 'acme' and 'globex'",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path)).Message);
    }

    [Fact]
    public async Task With_nbd_tls_off_tenant_identities_log_that_nbd_does_not_isolate_tenants()
    {
        using var dir = new TempDir();
        var logs = new WarningCollector();
        await using var host = await HostHarness.StartAsync(dir.Path, services: s => s.AddSingleton<ILoggerProvider>(logs));
        Assert.DoesNotContain(logs.Warnings, w => w.Contains("not isolated over NBD", StringComparison.Ordinal));
        await host.Registry.ReloadAsync([new TenantConfig("acme", null, null, null) { Identities = ["CN=vm1,O=Acme"] }]);
        Assert.Single(logs.Warnings, w => w.StartsWith("tenants are not isolated over NBD: qcow2actors.host.nbd.tls.mode is off; ", StringComparison.Ordinal));
    }

    /// <summary>Keeps the text of every warning the host logs.</summary>
    private sealed class WarningCollector : ILoggerProvider, ILogger
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _warnings = new();
        public IReadOnlyList<string> Warnings => [.. _warnings];
        public ILogger CreateLogger(string categoryName) => this;
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel == LogLevel.Warning) _warnings.Enqueue(formatter(state, exception));
        }
        public void Dispose() { }
    }
}
