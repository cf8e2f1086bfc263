"""Yosys / nextpnr flows and board definitions."""
