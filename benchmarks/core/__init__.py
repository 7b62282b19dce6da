"""What every task family shares and none of them owns: device, seeds, the data interface
and its sources, the one training loop, optimizers, resume, checkpoints, atomic files, run
folders and signals, torchrun, importance weighting, the profile of one training step.

Nothing here imports a task (``tests/test_layout.py`` checks it).
"""
