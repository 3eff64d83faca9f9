"""Plotting helpers for the experiments (matplotlib/seaborn); figures are saved with attrpatch.io.save_figure."""
