"""The retrain stage as a job (python or spark-submit) for one day, --ds YYYY-MM-DD; pipeline/stages.py
(RETRAINING_STAGES) says what it does, reads and writes."""
from pipeline.cli import stage_job

args_parser, _main, main = stage_job("retrain")

if __name__ == "__main__":
    main()
