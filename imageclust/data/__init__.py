"""Datasets: one module per kind of source (listed in ``registry.py``), the decoding of one image
(``images.py``), the selection of splits (``source.py``), the canonical prepared form every later
stage reads (``prepared.py``) and the download stage (``stage.py``)."""
