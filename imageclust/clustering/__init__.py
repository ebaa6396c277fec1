"""Clustering methods on extracted features: one module per method (its ``Params`` and ``METHOD``),
the registry that lists them, choosing K without labels, and the cluster stage (``stage.py``)."""
