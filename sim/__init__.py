"""cocotb testbenches, the Verilator runner and host drivers for the generated RTL."""
