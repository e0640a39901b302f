"""Scheduled batches: one day of arrivals scored, checked for drift and reported."""
