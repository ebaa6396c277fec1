"""Feature extraction: the registry of extractors, the embedder that runs one on pixels, batched
preprocessing on the device, the work folder that makes a killed run resume, and the extract
stage (``stage.py``)."""
