"""The order of forward and backward halves each pipeline stage of the multi-core accelerator runs
(sim/multicore_driver.py ``pipeline_order``), replayed against the interconnect's dependencies."""

import pytest


def test_pipeline_order_never_deadlocks_and_stays_within_the_buffers():
    """The per-stage order of forward and backward halves the multi-core driver issues (one
    forward, one backward after a warm-up) completes for every stage count, batch and buffer
    count; an order whose warm-up grows from one stage to the next deadlocks, and the replay
    says so (the check can fail)."""
    from spikeforge.sim.multicore_driver import check_pipeline_order, one_forward_one_backward, pipeline_order

    for stages in range(1, 7):
        for buffers in range(1, 7):
            for samples in (1, 2, 5, 8, 32):
                rounds = check_pipeline_order(stages, samples, buffers)
                assert rounds >= 2 * samples  # every stage runs 2 halves per sample, one at a time
    # stage 0 and stage 1 each hold up to 4; with 4 buffers, 8 samples on 4 stages pipeline
    assert check_pipeline_order(4, 8, 4) < check_pipeline_order(4, 8, 1)

    def growing(stage, stages, samples, buffers):  # the warm-up grows upward: stage 1 waits for F(1) of stage 0
        return one_forward_one_backward(1 if stage == 0 else 2, samples)

    with pytest.raises(RuntimeError, match="deadlocks"):
        check_pipeline_order(3, 4, 4, order=growing)
    with pytest.raises(RuntimeError, match="more than 1 buffers"):
        check_pipeline_order(3, 4, 1, order=lambda k, S, n, b: pipeline_order(k, S, n, 3))


def test_cross_core_placements_pipeline_without_deadlock():
    """Placements with cores holding the end of one layer and the start of the next (the
    mapper's cuts for 2..20 cores of deep-20core, and small ones): each core runs its stage's
    order (a cross core in its second slice's stage) and waits for the cores its slices take
    spikes and errors from; every batch completes within the buffers. A warm-up growing upward
    deadlocks on them as on a chain of stages (the check can fail)."""
    from spikeforge.mapper import place_pipeline
    from spikeforge.rtl.slice_role import pipeline_stages
    from spikeforge.rtl.slice_role import lagging_cores
    from spikeforge.sim.multicore_driver import check_placement_order, one_forward_one_backward, pipeline_order

    cost = [94, 346, 324, 136]
    for cores in range(2, 21):
        placement = place_pipeline((64, 128, 128, 128, 10), cores, 1 << 20, 1 << 30, 8, cost)
        for buffers in (1, 2, 4):
            assert check_placement_order(placement, 32, buffers) >= 64
    placement = place_pipeline((64, 32, 32, 32, 10), 4, 1 << 20, 1 << 30, 4)
    assert [len(h) for h in placement.cores] == [1, 2, 2, 2]
    assert pipeline_stages(placement) == [0, 1, 2, 3]
    assert lagging_cores(placement, 4) == [False, True, True, False]  # L4 is whole on core 3: it lags nothing
    assert lagging_cores(placement, 1) == [False] * 4
    # a lagging core holds a sample more: its warm-up is one less, and one more backward half ends its batch
    assert pipeline_order(0, 4, 8, 4, lag=True)[:4] == [("F", 0), ("F", 1), ("F", 2), ("B", 0)]
    assert pipeline_order(0, 4, 8, 4, lag=True)[-1] == ("B", None)

    def growing(stage, stages, samples, buffers, lag=False):  # a warm-up growing upward
        return one_forward_one_backward(1 if stage == 0 else 2, samples) + ([("B", None)] if lag else [])

    with pytest.raises(RuntimeError, match="deadlocks"):
        check_placement_order(placement, 4, 4, order=growing)

    def lag_ignored(stage, stages, samples, buffers, lag=False):  # a lagging core warming up to every bank overfills
        if not lag:
            return pipeline_order(stage, stages, samples, buffers)
        return one_forward_one_backward(buffers, samples) + [("B", None)]

    with pytest.raises(RuntimeError, match="more than 4 buffers|deadlocks"):
        check_placement_order(place_pipeline((64, 128, 128, 128, 10), 4, 1 << 20, 1 << 30, 8, cost), 8, 4,
                              order=lag_ignored)
