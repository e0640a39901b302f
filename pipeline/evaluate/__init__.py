"""Evaluation stage: test-set metrics, confusion matrices, model comparison and the accuracy gate."""
