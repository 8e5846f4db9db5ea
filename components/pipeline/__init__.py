"""The pipeline's single stage graph and the code that renders it for DVC and runs it for Prefect."""
