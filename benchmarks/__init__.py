"""The benchmark runner: configs, runs, measurements, the results record and its tables.

It imports :mod:`flows` (the library); :mod:`flows` never imports it. Entry point:
``python -m benchmarks`` (see :mod:`benchmarks.cli`). The folders show the architecture:

* :mod:`benchmarks.core`: what every task family shares (device, seeds, data interface, the
  training loop, checkpoints, atomic files, run folders, torchrun, importance weighting).
* :mod:`benchmarks.reporting`: MLflow tracking, the results record, Markdown and plots.
* :mod:`benchmarks.tasks`: one folder per family (classification, density, vae), each a
  :class:`~benchmarks.tasks.base.Task`, and the ``TASKS`` registry.
* :mod:`benchmarks.measure`: memory, architecture probes, flow speed, the regression gate.
* :mod:`benchmarks.run` (one tracked run for every task), :mod:`benchmarks.workers` (rows in
  worker processes), :mod:`benchmarks.bench` (``make bench``), :mod:`benchmarks.tables`.
"""
