"""Training stage: the model registry and Horovod-on-Spark training fed by Petastorm."""
