"""Interconnect construction: clear errors on bad parameters; the two-network top generates."""

import pytest
from amaranth.back import verilog

from spikeforge.rtl.noc import ChainRouter, Interconnect, StreamFifo, flit_layout


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        StreamFifo(8, 3)
    with pytest.raises(ValueError, match="direction"):
        ChainRouter(8, 0, 3, direction=0)
    with pytest.raises(ValueError, match="outside a chain"):
        ChainRouter(8, 3, 3)
    with pytest.raises(ValueError, match="data width"):
        flit_layout(0)


def test_interconnect_of_twenty_cores_generates():
    ic = Interconnect(20, spike_width=16, error_width=40)
    text = verilog.convert(ic, name="interconnect")
    assert "spikes" in text and "errors" in text
    assert ic.spikes.n == 20 and ic.errors.direction == -1
