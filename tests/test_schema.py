"""The normalisation from raw to curated images (schema.NORMALISATION), on Arrow arrays and on a DataFrame."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.testing import assertDataFrameEqual

from pipeline.schema import CURATED_SCHEMA, normalise_images, normalised


def test_normalised_maps_bytes_to_float32_unit_range():
    image = pa.array([bytes([0, 128, 255]), None, bytes([1, 2, 3])], pa.binary()).slice(2)
    assert normalised(image).to_pylist() == [[np.float32(1 / 255), np.float32(2 / 255), np.float32(3 / 255)]]
    full = normalised(pa.array([bytes([0, 128, 255])], pa.binary()))
    assert full.type == pa.list_(pa.float32())
    assert full.to_pylist() == [[0.0, np.float32(128) / np.float32(255), 1.0]]


def test_normalise_images_dataframe(spark):
    df = spark.createDataFrame([("a", bytes([0, 255]), 3), ("b", bytes([51, 102]), 0)],
                               "record_id string, image binary, label int")
    expected = spark.createDataFrame([("a", [0.0, 1.0], 3), ("b", [0.2, 0.4], 0)], CURATED_SCHEMA)
    assertDataFrameEqual(df.transform(normalise_images), expected, rtol=0.0, atol=1e-7)
