"""Prediction: distributed batch scoring of any readable input, and of ordinary image files."""
