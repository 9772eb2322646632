"""Task types used only by the benchmarks."""
