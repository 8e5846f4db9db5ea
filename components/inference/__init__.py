"""Inference on new golden/test pairs."""
