"""Networks: backbones trained here (``backbones.py``), the encoder file they are saved in
(``encoder.py``), frozen pretrained backbones with their preprocessing (``pretrained.py``) and the
heads built on top (``heads.py``)."""
