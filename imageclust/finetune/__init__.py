"""Fine-tuning methods after the cluster stage: SCAN and TEMI on the features, DeepCluster and
spectral fine-tuning of the encoder on the images; one module per method (its ``Params`` and
``METHOD``), the registry that lists them, and the finetune stage (``stage.py``)."""
