"""Every random stream of the suite as a pure function of ``(seed, counter, stream)``.

A run's randomness (the order of the examples, the augmentation of a batch, the dequantization
noise of a step, ...) is drawn from generators seeded by :func:`mix_seeds` of the run's seed, a
counter (the epoch, the step, the number of samples) and its stream in :class:`SeedStream`, so
a resumed run draws exactly what an uninterrupted one would, and two streams never coincide.

Example:
    >>> sampler = BatchSampler(num_examples=10, batch_size=4, seed=0)
    >>> sampler.indices(0).tolist() == sampler.indices(0).tolist()
    True
    >>> mix_seeds(0, 3, SeedStream.DEQUANTIZATION) != mix_seeds(0, 3, SeedStream.VAE_NOISE)
    True
"""

from __future__ import annotations

import enum

import torch

__all__ = ["BatchSampler", "SeedStream", "mix_seeds"]


class SeedStream(enum.IntEnum):
    """The random streams and their numbers (fixed: changing one changes every result)."""

    SHUFFLE = 1  # the permutation of each epoch (:class:`BatchSampler`)
    AUGMENT = 2  # the random crop and flip of each classifier batch
    IMAGENET_SAMPLE = 3  # the per-example augmentation of the streamed ImageNet loader
    DEQUANTIZATION = 5  # the dequantization noise of each density training step
    DENSITY_EVALUATION = 6  # the fixed noise of the density evaluation
    BINARISATION = 7  # the dynamic binarisation of each VAE training batch
    VAE_NOISE = 8  # the reparameterisation noise of each VAE training step
    VAE_EVALUATION = 9  # the importance samples of the VAE evaluation
    DROPOUT = 11  # the dropout masks from a (re)start on (plus the process's rank)


def mix_seeds(seed: int, counter: int, stream: int) -> int:
    """Combine integers into one 63-bit seed (``stream``: a :class:`SeedStream`)."""
    return (seed * 1_000_003 + counter * 7_919 + stream * 104_729) % (2**63 - 1)


class BatchSampler:
    """Deterministic mini-batches: epoch ``e`` is a permutation seeded by ``(seed, e)``.

    The last incomplete batch of an epoch is dropped, as in the official TF input pipeline.

    Example:
        >>> sampler = BatchSampler(num_examples=10, batch_size=4, seed=0)
        >>> sampler.indices(0).tolist() == sampler.indices(0).tolist()
        True
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        if batch_size > num_examples:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {num_examples} training examples"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = num_examples // batch_size
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        """Example indices of the batch used at training step ``step`` (0-based)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(
                mix_seeds(self.seed, epoch, SeedStream.SHUFFLE)
            )
            self._permutation = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]

    def augmentation_generator(self, step: int) -> torch.Generator:
        """Generator for the random augmentation of the batch at ``step``."""
        return torch.Generator().manual_seed(mix_seeds(self.seed, step, SeedStream.AUGMENT))
