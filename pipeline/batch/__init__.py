"""Scheduled batches, one day at a time: landing, scoring, drift check and batch report."""
