using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

public sealed class NbdByteBudgetTests
{
    private const int Unit = NbdByteBudget.UnitSize;

    [Fact]
    public void Units_round_up_and_never_exceed_the_whole_budget()
    {
        var budget = new NbdByteBudget(8 * Unit);
        Assert.Equal(8, budget.Capacity);
        Assert.Equal(1, budget.UnitsFor(1));
        Assert.Equal(1, budget.UnitsFor(Unit));
        Assert.Equal(2, budget.UnitsFor(Unit + 1));
        Assert.Equal(8, budget.UnitsFor(100L * Unit));
        Assert.Throws<ArgumentOutOfRangeException>(() => budget.TakeAsync(9, CancellationToken.None));
    }

    [Fact]
    public async Task A_large_request_waiting_first_is_served_before_smaller_ones_that_came_after()
    {
        var budget = new NbdByteBudget(8 * Unit);
        await budget.TakeAsync(6, CancellationToken.None);
        var large = budget.TakeAsync(8, CancellationToken.None).AsTask();
        var small = budget.TakeAsync(1, CancellationToken.None).AsTask();
        // 2 units are free, enough for the small one, but the large one asked first.
        Assert.False(large.IsCompleted);
        Assert.False(small.IsCompleted);
        budget.Release(6);
        await large;
        Assert.False(small.IsCompleted);
        Assert.Equal(0, budget.Available);
        budget.Release(8);
        await small;
        Assert.Equal(7, budget.Available);
    }

    [Fact]
    public async Task A_request_is_granted_whole_or_not_at_all()
    {
        var budget = new NbdByteBudget(8 * Unit);
        await budget.TakeAsync(5, CancellationToken.None);
        var waiting = budget.TakeAsync(4, CancellationToken.None).AsTask();
        // Nothing is taken piecemeal: the 3 free units stay free for when all 4 can be had.
        Assert.Equal(3, budget.Available);
        budget.Release(1);
        await waiting;
        Assert.Equal(0, budget.Available);
    }

    [Fact]
    public async Task A_cancelled_waiter_takes_nothing_and_lets_the_ones_behind_it_through()
    {
        var budget = new NbdByteBudget(8 * Unit);
        await budget.TakeAsync(6, CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var large = budget.TakeAsync(8, cts.Token).AsTask();
        var small = budget.TakeAsync(2, CancellationToken.None).AsTask();
        Assert.False(small.IsCompleted);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => large);
        await small;
        Assert.Equal(0, budget.Available);
        budget.Release(8);
        Assert.Equal(8, budget.Available);
    }
}
