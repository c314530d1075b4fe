"""Runs an experiment: data sources -> plan of stages -> stages -> run folder.

Plain PyTorch lives here; Ray Train wraps ``run_stage`` in ``sweeps/worker.py`` and Ray
Tune drives the plan in ``sweeps/``.
"""
