"""Analysis: pure polars + statistics over normalised frames."""
