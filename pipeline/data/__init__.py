"""Data stages: ingest raw MNIST (read by pipeline.formats), validate it and write raw Parquet; prepare normalises
and splits it."""
