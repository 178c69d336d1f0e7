"""fastconv asv benchmarks (see ../README.md)."""
