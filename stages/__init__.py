"""Thin entry points, one per DVC stage: ``python -m stages.<name>`` from the repository root."""
