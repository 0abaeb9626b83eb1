"""Experiments on top of the runner: cross-architecture evaluation, sweeps and reports."""
