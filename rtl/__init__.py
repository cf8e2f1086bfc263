"""Amaranth HDL of the spikeforge core (FP, BP and WG engines); see docs/architecture.md."""
