"""Runs an experiment: data sources -> plan of stages -> stages -> run folder.

Plain PyTorch lives here; Ray Train wraps ``run_stage`` in ``sweeps/worker.py`` and Ray Tune
drives the plan in ``sweeps/driver.py``. A stage reads top-down, each module importing only
those above it:

- ``data`` (the run's images, cache and folds), ``plan`` (stages per fold and their order),
  ``hyperparameters`` (a sweep's values applied to the experiment);
- ``context``: what a stage runs in (``StageContext``: experiment, data, tasks), its datasets,
  loaders and splits, its training and noise settings;
- ``network``: the stage's ``ModelSpec`` and network, started from the stored backbone;
- ``scoring``, ``original_size``, ``threshold``: metrics and predictions on every split;
- ``checkpoints`` (model folders), ``samples`` (galleries), ``outputs`` (``result.json`` and
  the tables);
- ``kinds``: backbone, heads, baseline, and the one dispatch ``execute_stage``;
- ``stage``: ``run_stage``, the entry point of a stage;
- ``ensemble`` (fold ensembles), ``runfolder`` and ``local`` (``umsrep train``: every stage in
  this process).
"""
