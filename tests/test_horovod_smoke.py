"""Foundation smoke test: horovod.spark.run starts 2 Gloo ranks on Spark local[2] and they allreduce."""
from __future__ import annotations


def test_two_ranks_allreduce(spark):
    import horovod.spark

    def allreduce_rank() -> dict:  # nested: cloudpickle ships it by value (workers cannot import tests/)
        import os

        import horovod.tensorflow as hvd
        import tensorflow as tf
        hvd.init()
        total = hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum)
        return {"rank": hvd.rank(), "size": hvd.size(), "sum": float(total.numpy()), "pid": os.getpid()}

    results = horovod.spark.run(allreduce_rank, num_proc=2, use_gloo=True, start_timeout=120, verbose=0,
                                env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["size"] for r in results] == [2, 2]
    assert [r["sum"] for r in results] == [3.0, 3.0]   # (0 + 1) + (1 + 1) on both ranks
    assert results[0]["pid"] != results[1]["pid"]
