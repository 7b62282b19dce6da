"""Invertible building blocks. Bijective layers follow one contract, stated by their base
class :class:`InvertibleLayer` (:mod:`flows.layers.base`): ``y, logdet = layer(x)`` and
``x = layer.inverse(y)``, with ``logdet`` of shape ``(batch,)`` (log|det dy/dx| in nats, summed
over the dimensions of a sample). The exceptions, documented as such and not subclasses of
:class:`InvertibleLayer`: :class:`Split` (factor-out: ``z1, z2, log p(z2 | z1) = split(x)``),
the injective :class:`ChannelZeroPad`, the non-bijective building blocks :class:`Conv2dSame`,
:class:`ZeroConv2d` and :class:`DataInitConv2d`, and :class:`UniformDequantizer` (a noise
source). :mod:`flows.testing` checks a layer against this contract."""

from flows.layers.base import InvertibleLayer
from flows.layers.conv import Conv2dSame, ZeroConv2d, edge_pad
from flows.layers.coupling import AdditiveCoupling, AffineCoupling, GlowAffineCoupling
from flows.layers.data_init import DataInitConv2d
from flows.layers.invconv import InvConv1x1, InvConv1x1LU, random_rotation
from flows.layers.masks import channel_mask, checkerboard_mask
from flows.layers.normalization import ActNorm, BatchNormFlow, ElementwiseNorm
from flows.layers.preprocessing import LogitTransform, UniformDequantizer, dequantize
from flows.layers.reshaping import (
    ChannelZeroPad,
    SpaceToDepth,
    Squeeze,
    depth_to_space,
    space_to_depth,
    squeeze,
    squeeze_ordered,
    unsqueeze,
    unsqueeze_ordered,
)
from flows.layers.sequence import FlowSequence
from flows.layers.split import Split, gaussian_log_prob

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BatchNormFlow",
    "ChannelZeroPad",
    "Conv2dSame",
    "DataInitConv2d",
    "ElementwiseNorm",
    "FlowSequence",
    "GlowAffineCoupling",
    "InvConv1x1",
    "InvConv1x1LU",
    "InvertibleLayer",
    "LogitTransform",
    "SpaceToDepth",
    "Split",
    "Squeeze",
    "UniformDequantizer",
    "ZeroConv2d",
    "channel_mask",
    "checkerboard_mask",
    "depth_to_space",
    "dequantize",
    "edge_pad",
    "gaussian_log_prob",
    "random_rotation",
    "space_to_depth",
    "squeeze",
    "squeeze_ordered",
    "unsqueeze",
    "unsqueeze_ordered",
]
