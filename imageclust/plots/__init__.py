"""Everything the plot stage draws, one module per kind of picture (confusion, sizes, the 2-D maps,
curves, contact sheets), the offline report, and the stage (``stage.py``)."""
