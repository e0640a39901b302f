"""Experiment tracking and the model registry (MLflow), shared by the stages: train logs every model, evaluate logs
test metrics and decides promotions, predict loads registered versions, the report shows and uploads. It imports
no stage package, and MLflow only inside its functions, so `--help`, config errors and runs with tracking off never
import it."""
