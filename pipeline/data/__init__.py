"""Data stage: read raw MNIST (IDX, npz, CSV), validate it, write raw Parquet, normalise and split."""
