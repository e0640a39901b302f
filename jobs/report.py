"""The report stage as a job (python or spark-submit); pipeline/stages.py says what it does, reads and writes."""
from pipeline.cli import stage_job

args_parser, _main, main = stage_job("report")

if __name__ == "__main__":
    main()
