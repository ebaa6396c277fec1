"""Self-supervised pretraining: SimCLR and MoCo v2 (one module each, listed in ``registry.py``),
the training loop they share (``loop.py``) and the pretrain stage (``stage.py``)."""
