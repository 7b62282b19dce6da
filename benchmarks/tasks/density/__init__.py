"""Density estimation: RealNVP, Glow and Flow++ in bits/dim beside a per-pixel baseline,
the bits/dim table and the Flow++ ablation table
(:class:`~benchmarks.tasks.density.task.DensityTask`).
"""
