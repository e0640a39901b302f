"""Scheduled batches: one day of arriving images at a time, from its landing folder to its scored partitions."""
