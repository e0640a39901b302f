"""EDA stage: Spark aggregations of the curated data and the figures that show them."""
