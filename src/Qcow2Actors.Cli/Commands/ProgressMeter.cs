using System.Globalization;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// qemu-img's <c>-p</c> line, "    (12.34/100%)" rewritten in place with a carriage return and ended by a
/// newline, printed by qemu's rule: only when the value moved more than the verb's minimum step since
/// the last line, or is 0 or 100 (which always print, so a verb that reaches 100 and then ends prints
/// 100 twice, as qemu-img does). Values are single-precision, as qemu keeps them.
/// </summary>
/// <remarks>
/// Where qemu-img's steps follow its own copy loop, the verb gives a schedule of (position, value)
/// ticks worked out the way qemu-img's loop would make them; <see cref="Advance"/> then prints the ticks
/// the work has passed. Without a schedule a position is turned into a share of <c>total</c>.
/// </remarks>
internal sealed class ProgressMeter
{
    private readonly long _total;
    private readonly float _minSkip;
    private readonly TextWriter _out;
    private float _lastPrint;
    private (long End, float Value)[] _ticks = [];
    private int _next;

    /// <param name="total">What <see cref="Advance"/>'s positions are a share of.</param>
    /// <param name="minSkip">qemu-img's minimum step for the verb (convert, commit, amend 1; rebase, compare 2).</param>
    /// <param name="output">Where the lines go (stdout).</param>
    public ProgressMeter(long total, float minSkip = 1f, TextWriter? output = null)
    {
        _total = total;
        _minSkip = minSkip;
        _out = output ?? Console.Out;
    }

    /// <summary>The value last set (printed or not).</summary>
    public float Current { get; private set; }

    /// <summary>From now on <see cref="Advance"/> prints these ticks (ascending positions) instead of shares of the total.</summary>
    public void Schedule(IReadOnlyList<(long End, float Value)> ticks)
    {
        _ticks = [.. ticks];
        _next = 0;
    }

    /// <summary>Added to every <see cref="Advance"/> position (where the current source starts in a concatenation).</summary>
    public long Offset { get; set; }

    /// <summary>The work has reached <paramref name="done"/> (plus <see cref="Offset"/>).</summary>
    public void Advance(long done)
    {
        done = done > long.MaxValue - Offset ? long.MaxValue : done + Offset;
        if (_ticks.Length > 0)
        {
            while (_next < _ticks.Length && _ticks[_next].End <= done) Print(_ticks[_next++].Value);
            return;
        }
        Print(_total == 0 ? 100f : (float)(done * 100.0 / _total));
    }

    /// <summary>Sets the value (qemu_progress_print with max 0) and prints it if qemu-img would.</summary>
    public void Print(double percent)
    {
        float current = Math.Min((float)percent, 100f);
        Current = current;
        if (current > _lastPrint + _minSkip || current < _lastPrint - _minSkip || current == 0f || current == 100f)
        {
            _lastPrint = current;
            _out.Write(string.Create(CultureInfo.InvariantCulture, $"    ({(double)current:F2}/100%)\r"));
            _out.Flush();
        }
    }

    /// <summary>Adds <paramref name="percent"/> to the value (qemu_progress_print with max 100).</summary>
    public void Add(float percent) => Print(Current + percent / 100f * 100f);

    /// <summary>The ticks not passed yet, then 100, then the newline.</summary>
    public void Finish()
    {
        if (_ticks.Length > 0) Advance(long.MaxValue);
        Print(100);
        End();
    }

    /// <summary>The newline qemu-img ends its progress with (also when the verb failed).</summary>
    public void End()
    {
        _out.Write('\n');
        _out.Flush();
    }
}
