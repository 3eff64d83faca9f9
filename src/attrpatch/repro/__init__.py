"""Reproduction: profiles and their checks (`config`, `settings`), the experiments' context
(`context`), the claims checker (`claims`), its exit status for the DAG (`gate`) and the papers'
numbers (`paper_numbers`). Import from the submodules; this package exports nothing itself."""
