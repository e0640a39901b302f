"""`make bench`: every stage measured next to the simplest single-process alternative (see benchmarks/README.md)."""
