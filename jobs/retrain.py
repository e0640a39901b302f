"""Retraining for one day (python or spark-submit): jobs/retrain.py --ds YYYY-MM-DD [--models model_3] [--force];
pipeline/retrain/job.py says what it does, reads and writes."""
from pipeline.retrain.job import _main, args_parser, main

__all__ = ["_main", "args_parser", "main"]

if __name__ == "__main__":
    main()
