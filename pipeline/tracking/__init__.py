"""Experiment tracking and the model registry (MLflow), shared by the stages: train logs every model (live from rank 0,
completed by the driver), evaluate logs test metrics and decides promotions, predict loads registered versions, the
report shows and uploads; served_model is what `make serve` answers with. It imports no stage package, and MLflow
only inside its functions (served_model, which MLflow itself loads, excepted), so `--help`, config errors and runs
with tracking off never import it."""
