"""The UART board top under cocotb + Verilator (sim/tb/tb_uart.py): the host protocol over the
serial pins through UartTransport and the Client -- INFO, one mini-batch trained exactly as the
golden model, a refused command's sticky error registers, and resynchronisation after half a
word, a framing error and a break. Built once (cached per config and divisor); a failure names
the seed and the command that replays it."""

import pytest

from spikeforge.sim.cosim_uart import TESTCASES, replay_command, run_uart

#: each seed: other weights, samples, byte gaps and phases, and host baud error (within ±1 %)
SEEDS = (1, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_uart_cosim(seed):
    res, out = run_uart(list(TESTCASES), seed=seed)
    if not res.passed or out is None:
        report = res.report()
        if "replay:" not in report:  # the bench names it on mismatches, not on timeouts or crashes
            report += f"\n  replay: {replay_command(seed)}"
        pytest.fail(f"seed {seed}: UART co-simulation failed\n{report}", pytrace=False)
    assert set(out) == set(TESTCASES)
    assert out["protocol"]["weights_compared"] == 12 * 6 + 6 * 3
