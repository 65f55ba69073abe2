"""Experiment specs (one YAML per reproduced figure or table) and their hooks; run by normexp-reproduce."""
