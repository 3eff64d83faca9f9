"""Circuits: choosing edges from scores (`select`), measuring them by exact patching
(`faithfulness`), curves over edge budgets (`curves`), ROC against a reference (`roc`), the
circuit file (`file`), find-measure-save (`run`), the reference circuits (`exact_reference`,
`published`), GQA conventions of a circuit (`kv`) and MIB's circuit track (`mib_metrics`: CPR/CMD,
`mib_submission`: its folder, `mib_track`: one model on the track). Import from the submodules; this package exports nothing itself."""
