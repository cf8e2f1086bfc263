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
