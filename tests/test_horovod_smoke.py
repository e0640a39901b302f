"""Foundation smoke test: run_horovod (horovod.spark.run) starts 2 Gloo ranks on Spark local[2]; they allreduce."""
from __future__ import annotations


def test_two_ranks_allreduce(spark):
    from pipeline.services import run_horovod

    def allreduce_rank() -> dict:  # nested: cloudpickle ships it by value (workers cannot import tests/)
        import os

        import horovod.tensorflow as hvd
        import tensorflow as tf
        hvd.init()
        total = hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum)
        return {"rank": hvd.rank(), "size": hvd.size(), "sum": float(total.numpy()), "pid": os.getpid()}

    results = run_horovod(spark, allreduce_rank, num_proc=2, start_timeout=120,
                          env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["size"] for r in results] == [2, 2]
    assert [r["sum"] for r in results] == [3.0, 3.0]   # (0 + 1) + (1 + 1) on both ranks
    assert results[0]["pid"] != results[1]["pid"]
