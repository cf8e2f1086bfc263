"""spikeforge: an open, verifiable accelerator that trains spiking neural networks on chip."""

__version__ = "0.1.0"
