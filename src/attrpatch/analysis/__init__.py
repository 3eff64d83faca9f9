"""Analyses shared by the experiments: ROC/AUC bookkeeping, fits, curves (pure computations, no plotting)."""
