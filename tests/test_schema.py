"""The normalisation from raw to curated images (schema.NORMALISATION), on Arrow arrays and on a DataFrame."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.schema import normalise_images, normalised


def test_normalised_maps_bytes_to_float32_unit_range():
    image = pa.array([bytes([0, 128, 255]), None, bytes([1, 2, 3])], pa.binary()).slice(2)
    assert normalised(image).to_pylist() == [[np.float32(1 / 255), np.float32(2 / 255), np.float32(3 / 255)]]
    full = normalised(pa.array([bytes([0, 128, 255])], pa.binary()))
    assert full.type == pa.list_(pa.float32())
    assert full.to_pylist() == [[0.0, np.float32(128) / np.float32(255), 1.0]]


def test_normalise_images_dataframe(spark):
    df = spark.createDataFrame([("a", bytes([0, 255]), 3), ("b", bytes([51, 102]), 0)],
                               "record_id string, image binary, label int")
    rows = {r.record_id: r for r in df.transform(normalise_images).collect()}
    assert rows["a"].image == [0.0, 1.0] and rows["a"].label == 3
    assert rows["b"].image == pytest.approx([0.2, 0.4], abs=1e-7)
