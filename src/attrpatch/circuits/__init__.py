"""Circuits: choosing edges from scores (`select`), measuring them by exact patching
(`faithfulness`), curves over edge budgets (`curves`), ROC against a reference (`roc`), the
circuit file (`file`), find-measure-save (`run`) and the reference circuits (`exact_reference`,
`published`). Import from the submodules; this package exports nothing itself."""
