"""Tools: benchmarks and helpers that are not part of serving."""
