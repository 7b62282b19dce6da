"""Invertible building blocks. Bijective layers follow one contract:
``y, logdet = layer(x)`` and ``x = layer.inverse(y)``, with ``logdet`` of shape ``(batch,)``."""

from flows.layers.reshaping import ChannelZeroPad, SpaceToDepth, depth_to_space, space_to_depth

__all__ = ["ChannelZeroPad", "SpaceToDepth", "depth_to_space", "space_to_depth"]
