"""Across runs: a profile run as a DVC experiment, experiments compared, the CI gate against a
baseline, and `dvc plots diff` rendered offline."""
