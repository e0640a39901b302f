"""The one way to build a SparkSession: what it sets beyond the config."""


def test_no_progress_bar_repaints_when_stderr_is_not_a_terminal(spark):
    """A job's log file or a scheduler's task log gets stage lines, not Spark's console bar (which a Python job
    launched through pyspark-shell would otherwise show). Under pytest stderr is captured, not a terminal."""
    assert spark.sparkContext.getConf().get("spark.ui.showConsoleProgress") == "false"
