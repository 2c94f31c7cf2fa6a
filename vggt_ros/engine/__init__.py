"""Inference engine: preprocessing, precision, the Predictor API."""
