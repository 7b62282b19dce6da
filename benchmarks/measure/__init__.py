"""Measurements beside the training runs: the memory and speed of one training step, the
architecture probes at ImageNet size and the inversion figure, the flows' training speed, and
the regression gate (its probes and the spread of its figures across CPU kernels).

Nothing here imports the run (:mod:`benchmarks.run`).
"""
