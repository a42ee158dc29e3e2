"""Experiment configs (ml_collections ConfigDict files, one per experiment)."""
