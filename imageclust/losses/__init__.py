"""Losses as small pure functions, each citing the paper it comes from: contrastive ones for
pretraining (``contrastive.py``), those that train cluster heads (``clustering.py``), the
prototype loss of spectral fine-tuning (``prototypes.py``) and TURTLE's task-encoder objectives
(``turtle.py``)."""
