"""The benchmark runner: configs, data, training loops, probes, MLflow logging and tables.

It imports :mod:`flows` (the library); :mod:`flows` never imports it. Entry point:
``python -m benchmarks`` (see :mod:`benchmarks.cli`).
"""
