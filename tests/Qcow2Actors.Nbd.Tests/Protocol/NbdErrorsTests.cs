using Qcow2Actors.Engine;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

public sealed class NbdErrorsTests
{
    [Fact]
    public void The_engines_out_of_space_error_reaches_the_client_as_ENOSPC()
    {
        var full = new Qcow2NoSpaceException("'disk.qcow2': no space left on the host for this request");
        // The export lets it through unchanged; the server maps its errno.
        Assert.Null(Qcow2Export.Translate(full));
        Assert.Equal(NbdError.NoSpace, NbdErrors.FromException(full));
    }
}
