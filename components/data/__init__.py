"""Data: synthesis, ingestion, layout checks and dataset preparation."""
