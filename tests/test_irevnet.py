"""i-RevNet: invertible downsampling, injective padding and exact inversion of the network."""

from __future__ import annotations

import pytest
import torch

from benchmarks.core.profiling import saved_activation_bytes
from flows.layers import ChannelZeroPad, SpaceToDepth, depth_to_space, space_to_depth
from flows.models.irevnet import IRevNet, IRevNetBlock
from flows.registry import create, get_info
from tests.test_reversible import compare_with_plain, randomize_batch_norm, relative_error


def test_space_to_depth_is_the_irevnet_permutation() -> None:
    x = torch.randn(2, 3, 6, 8)
    y = space_to_depth(x, 2)
    for i in range(2):
        for j in range(2):
            for c in range(3):
                assert torch.equal(y[:, (i * 2 + j) * 3 + c], x[:, c, i::2, j::2])
    assert torch.equal(depth_to_space(y, 2), x)  # bit for bit
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)


def test_space_to_depth_jacobian_is_a_permutation_matrix() -> None:
    layer = SpaceToDepth(2)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: layer(t)[0], x).reshape(32, 32)
    assert set(jacobian.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(jacobian.sum(0), torch.ones(32)) and torch.equal(
        jacobian.sum(1), torch.ones(32)
    )
    assert torch.linalg.slogdet(jacobian).logabsdet.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(layer(x)[1], torch.zeros(1, dtype=torch.float64))


def test_channel_zero_pad_is_injective() -> None:
    pad = ChannelZeroPad(5)
    x = torch.randn(2, 3, 4, 4)
    y = pad(x)
    assert y.shape == (2, 8, 4, 4) and torch.equal(y[:, 3:], torch.zeros(2, 5, 4, 4))
    assert torch.equal(pad.inverse(y), x)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "stride"), [(8, 8, 1), (8, 16, 2), (3, 8, 1)]
)
def test_block_inverse_in_float64(in_channels: int, out_channels: int, stride: int) -> None:
    torch.manual_seed(0)
    block = IRevNetBlock(in_channels, out_channels, stride, kernel_sizes=(3, 3, 3)).double().eval()
    x = torch.randn(2, in_channels, 8, 8, dtype=torch.float64)
    halves = (x[:, : in_channels // 2], x[:, in_channels // 2 :])
    with torch.no_grad():
        out = block(halves)
        back = block.inverse(out)
    assert all(o.shape[1] == out_channels for o in out)
    assert (torch.cat(back, dim=1) - x).abs().max() < 1e-12


def test_bijective_irevnet_b_inverts_at_224() -> None:
    torch.manual_seed(0)
    model = create("irevnet_b").eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        z = model.representation(x)
        reconstructed = model.inverse(z)
    assert z.shape == (1, 3072, 7, 7) and z.numel() == x.numel()  # bijective: same size
    assert (reconstructed - x).abs().max() < 1e-4
    assert model(x).shape == (1, 1000)


def test_injective_irevnet_is_larger_and_its_padding_comes_back_as_zeros() -> None:
    torch.manual_seed(1)
    model = create("irevnet_cifar").double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        z = model.representation(x)
        assert z.numel() > x.numel()  # injective: 512x8x8 from 3x32x32
        halves = z.chunk(2, dim=1)
        for block in reversed(model.blocks[1:]):
            halves = block.inverse(halves)
        first = model.blocks[0]
        z1, y1 = halves
        padded_x2 = z1  # stride 1: the first block passes x2 through
        padded_x1 = y1 - first.f(padded_x2)
        padded = torch.cat([padded_x1, padded_x2], dim=1)
        assert padded[:, 3:].abs().max() < 1e-12  # the 29 padded channels
        assert (model.inverse(z) - x).abs().max() < 1e-10
        exact = first((x[:, :1], x[:, 1:]))
        assert (
            torch.equal(torch.cat(first.inverse(exact), dim=1), x)
            or (torch.cat(first.inverse(exact), dim=1) - x).abs().max() < 1e-15
        )


def test_small_bijective_network_inverts_in_float64_in_train_mode() -> None:
    torch.manual_seed(2)
    model = IRevNet((1, 2, 2, 1), (2, 2, 2, 2), (24, 96, 384, 1536), num_classes=10).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    stats = [b.clone() for b in model.buffers()]
    with torch.no_grad():
        z = model.representation(x)  # train mode: BN uses this batch's statistics
        stats_after_forward = [b.clone() for b in model.buffers()]
        reconstructed = model.inverse(z)
    assert (reconstructed - x).abs().max() < 1e-10
    assert any(not torch.equal(a, b) for a, b in zip(stats, stats_after_forward, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(stats_after_forward, model.buffers(), strict=True))


@pytest.mark.parametrize(("kernel_sizes", "expected"), [("paper", 29e6), ("public", 125e6)])
def test_irevnet_b_parameter_counts(kernel_sizes: str, expected: float) -> None:
    params = sum(p.numel() for p in create("irevnet_b", kernel_sizes=kernel_sizes).parameters())
    assert params == pytest.approx(expected, rel=0.01)
    assert get_info("irevnet_b").published_params == 29_000_000


def test_cifar_irevnet_configuration() -> None:
    model = create("irevnet_cifar")
    assert len(model.blocks) == 54
    assert [b.stride for b in model.blocks].count(2) == 2
    assert model.blocks[0].pad.pad == 29 and all(b.pad.pad == 0 for b in model.blocks[1:])
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.modules())


def test_injective_irevnet_a_inverts_at_224_and_recovers_zero_padding() -> None:
    torch.manual_seed(3)
    model = create("irevnet_a").eval()
    # as documented: a reconstruction (193.47M) of the paper's 181M configuration
    assert sum(p.numel() for p in model.parameters()) == 193_465_960
    assert get_info("irevnet_a").published_params == 181_000_000
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        z = model.representation(x)
        assert z.shape == (1, 8192, 7, 7) and z.numel() > x.numel()
        assert (model.inverse(z) - x).abs().max() < 1e-4
        halves = z.chunk(2, dim=1)
        for block in reversed(model.blocks[1:]):
            halves = block.inverse(halves)
        first = model.blocks[0]
        assert first.pad.pad == 128 - 48
        x1 = halves[1] - first.f(halves[0])
        padded = torch.cat([x1, halves[0]], dim=1)
        assert padded[:, 48:].abs().max() < 1e-4  # the 80 appended channels come back as zeros


# --- the memory-saving backward -----------------------------------------------------------


def _small_irevnets() -> dict[str, IRevNet]:
    """Small networks of the three published patterns (the full ones are 29M to 194M
    parameters, too large for float64 on a test machine): (b) all strides 2 after a 2x2
    ``space_to_depth``; (a) a 4x4 ``space_to_depth`` and a stride-1 first stage that pads
    channels; the CIFAR network with dropout and 3x3 kernels, no initial downsampling."""
    return {
        "b": IRevNet((2, 2, 2), (2, 2, 2), (8, 32, 128), num_classes=5, in_channels=1),
        "a": IRevNet(
            (2, 2, 1), (1, 2, 2), (16, 64, 256), num_classes=5, in_channels=1, init_block_size=4
        ),
        "cifar": IRevNet(
            (2, 2, 2),
            (1, 2, 2),
            (16, 64, 256),
            num_classes=5,
            in_channels=3,
            init_block_size=1,
            dropout=0.1,
            kernel_sizes="public",
        ),
    }


@pytest.mark.parametrize(
    ("pattern", "dtype", "tolerance", "trained_norms"),
    [
        ("b", torch.float64, 1e-10, False),
        ("a", torch.float64, 1e-10, False),
        # at initialisation the padded channels stay exact zeros into the next block, where
        # BatchNorm and ReLU read them: a reconstruction off by 1e-17 there once moved
        # gradients by 180 %
        ("cifar", torch.float64, 1e-10, False),
        ("b", torch.float64, 1e-10, True),
        ("a", torch.float64, 1e-10, True),
        ("cifar", torch.float64, 1e-10, True),
        # float32: the reconstruction is exact to float32 rounding, which the backward
        # amplifies (measured up to 1.0e-5 relative on a parameter of the "b" pattern)
        ("b", torch.float32, 1e-4, True),
        ("cifar", torch.float32, 1e-4, True),
    ],
)
def test_memory_saving_gradients_equal_plain_autograd(
    pattern: str, dtype: torch.dtype, tolerance: float, trained_norms: bool
) -> None:
    """Input and parameter gradients, BatchNorm statistics and dropout masks (the CIFAR
    pattern) of one training step, with and without recomputation, at initialisation and
    with BatchNorm statistics and affine parameters of a trained network."""
    torch.manual_seed(0)
    saving = _small_irevnets()[pattern].to(dtype).train()
    if trained_norms:
        randomize_batch_norm(saving)
    assert saving.memory_saving
    x = torch.randn(3, saving.blocks[0].in_channels // saving.init_block_size**2, 16, 16)
    (grad_x, plain_grad_x), grads, plain = compare_with_plain(
        saving, lambda model: setattr(model, "memory_saving", False), x.to(dtype), seed=11
    )
    assert relative_error(grad_x, plain_grad_x) < tolerance
    for grad, plain_grad in grads:
        assert relative_error(grad, plain_grad) < tolerance
    for (name, buffer), plain_buffer in zip(saving.named_buffers(), plain.buffers(), strict=True):
        assert torch.allclose(buffer, plain_buffer, rtol=tolerance, atol=0), name


def test_memory_saving_holds_only_the_representation() -> None:
    """The blocks keep nothing for backward: what autograd saves is the representation and
    the head's, the same for 2 or 6 blocks per stage."""

    def saved(blocks: int) -> int:
        torch.manual_seed(0)
        model = IRevNet((blocks, blocks), (2, 2), (8, 32), num_classes=5, in_channels=1)
        x = torch.randn(4, 1, 16, 16)
        ids = {id(p) for p in model.parameters()}
        loss, nbytes = saved_activation_bytes(lambda: model(x).sum(), ids)
        loss.backward()
        return nbytes

    assert saved(6) == saved(2)
    torch.manual_seed(0)
    plain = IRevNet((6, 6), (2, 2), (8, 32), num_classes=5, in_channels=1, memory_saving=False)
    ids = {id(p) for p in plain.parameters()}
    _, plain_bytes = saved_activation_bytes(lambda: plain(torch.randn(4, 1, 16, 16)).sum(), ids)
    assert plain_bytes > 5 * saved(6)


def test_memory_saving_keeps_the_representation_once() -> None:
    """Per image, a training step keeps what the head's backward needs and nothing more: the
    representation (BatchNorm's input, which is also the output the memory-saving backward
    starts from), the ReLU's output (as large) and the pooled features for the linear layer.
    A copy of the representation kept apart from BatchNorm's input would show as a surplus."""
    torch.manual_seed(0)
    model = IRevNet((2, 2), (2, 2), (8, 32), num_classes=5, in_channels=1).train()
    ids = {id(p) for p in model.parameters()}

    def saved(batch: int) -> int:
        loss, nbytes = saved_activation_bytes(
            lambda: model(torch.randn(batch, 1, 16, 16)).sum(), ids
        )
        loss.backward()
        return nbytes

    representation = model.representation(torch.randn(1, 1, 16, 16))
    numel, channels = representation.numel(), representation.shape[1]
    assert saved(3) - saved(2) == 4 * (2 * numel + channels)


def test_the_builders_take_memory_saving() -> None:
    assert not create("irevnet_cifar", memory_saving=False).memory_saving
    assert create("irevnet_cifar").memory_saving
