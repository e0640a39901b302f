"""Distributed MNIST image classification on Spark: data, EDA, training, evaluation, prediction, report."""
