"""MixedOp (PC-DARTS partial channels), channel shuffle, hard Gumbel-softmax, temperature."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas_search.gumbel import (
    gumbel_noise, hard_gumbel_softmax, linear_temperature, scale_by_sample,
)
from nas_search.mixed_op import MixedOp, channel_shuffle, channel_unshuffle
from nas_search.runtime import ActivationMeter


def channels_of(x: torch.Tensor) -> list[int]:
    return x[0, :, 0, 0].long().tolist()


def labelled(c: int, hw: int = 3) -> torch.Tensor:
    """A (2, c, hw, hw) tensor whose channel i holds the value i everywhere."""
    return torch.arange(c, dtype=torch.float32).view(1, c, 1, 1).expand(2, c, hw, hw).clone()


@pytest.mark.parametrize("groups, order", [(1, [0, 1, 2, 3, 4, 5]), (2, [0, 3, 1, 4, 2, 5]),
                                           (3, [0, 2, 4, 1, 3, 5])])
def test_channel_shuffle_is_the_documented_permutation(groups, order):
    x = labelled(6)
    assert channels_of(channel_shuffle(x, groups)) == order
    assert torch.equal(channel_unshuffle(channel_shuffle(x, groups), groups), x)
    assert torch.equal(channel_shuffle(channel_unshuffle(x, groups), groups), x)


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible"):
        channel_shuffle(labelled(6), 4)


def test_only_the_first_c_over_k_channels_pass_through_the_ops():
    op = MixedOp(8, ["test_double", "test_negate", "test_probe"], k=4)
    x = torch.randn(2, 8, 5, 5)
    w = torch.tensor([0.5, 0.3, 0.2])
    out = channel_unshuffle(op(x, w), 4)
    assert op.ops[2].seen == [2]
    # 0.5 * 2x + 0.3 * (-x) + 0.2 * x = 0.9 x on the sampled channels; bypass untouched.
    torch.testing.assert_close(out[:, :2], 0.9 * x[:, :2])
    assert torch.equal(out[:, 2:], x[:, 2:])


def test_partial_output_is_shuffled_with_k_groups():
    op = MixedOp(6, ["test_probe"], k=3)
    out = op(labelled(6), torch.ones(1))
    assert channels_of(out) == [0, 2, 4, 1, 3, 5]


def test_k1_is_the_plain_darts_weighted_sum():
    op = MixedOp(4, ["test_conv3", "test_conv1"], k=1)
    x, w = torch.randn(2, 4, 5, 5), torch.tensor([0.25, 0.75])
    torch.testing.assert_close(op(x, w), 0.25 * op.ops[0](x) + 0.75 * op.ops[1](x))


def test_stride2_pools_the_bypass_to_the_ops_output_size():
    op = MixedOp(4, ["test_conv3"], stride=2, k=2)
    x = torch.randn(2, 4, 7, 7)
    out = channel_unshuffle(op(x, torch.ones(1)), 2)
    assert out.shape == (2, 4, 4, 4)
    assert torch.equal(out[:, 2:], F.max_pool2d(x[:, 2:], 3, 2, 1))


def test_sampled_mode_runs_only_the_chosen_op_and_passes_gradient():
    op = MixedOp(4, ["test_conv3", "test_conv1", "test_probe"], k=1)
    calls = [0, 0, 0]
    for i, m in enumerate(op.ops):
        m.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    logits = torch.zeros(3, requires_grad=True)
    x = torch.randn(2, 4, 5, 5)
    weights = F.one_hot(torch.tensor(1), 3).float() + (logits - logits.detach())
    out = op(x, weights, index=1)
    assert calls == [0, 1, 0]
    assert torch.equal(out, op.ops[1](x))
    out.sum().backward()
    with torch.no_grad():
        assert logits.grad[1] == pytest.approx(float(op.ops[1](x).sum()), rel=1e-5)
    assert logits.grad[0] == 0 and logits.grad[2] == 0


def test_mixed_op_validates_its_arguments():
    with pytest.raises(ValueError, match="divisible by k=3"):
        MixedOp(8, ["test_conv1"], k=3)
    with pytest.raises(ValueError, match="duplicate"):
        MixedOp(4, ["test_conv1", "test_conv1"])
    with pytest.raises(ValueError, match="expected 2 op weights"):
        MixedOp(4, ["test_conv1", "test_conv3"])(torch.randn(1, 4, 3, 3), torch.ones(3))


# --------------------------------------------------------------------- Gumbel (Eq. 4-5)
def test_hard_gumbel_softmax_is_exactly_one_hot_at_the_noisy_argmax():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.1, 0.7], requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    noise = gumbel_noise((5,), torch.Generator().manual_seed(3))
    for _ in range(20):
        weights, index = hard_gumbel_softmax(logits, tau=0.7, generator=gen)
        assert index == int((logits.detach() + noise).argmax())
        assert torch.equal(weights, F.one_hot(torch.tensor(index), 5).float())
        noise = gumbel_noise((5,), torch.Generator().set_state(gen.get_state()))


@pytest.mark.parametrize("scale_by_length", [True, False])
def test_straight_through_gradient_is_softmax_gradient_times_length(scale_by_length):
    logits = torch.tensor([0.3, -1.2, 2.0, 0.1], requires_grad=True)
    upstream, tau = torch.tensor([1.0, -2.0, 0.5, 3.0]), 2.5
    g = gumbel_noise((4,), torch.Generator().manual_seed(0))
    weights, _ = hard_gumbel_softmax(logits, tau, torch.Generator().manual_seed(0),
                                     scale_by_length)
    (grad,) = torch.autograd.grad((weights * upstream).sum(), logits)
    p = torch.softmax((logits.detach() + g) / tau, 0)
    expected = (p * (upstream - (p * upstream).sum())) / tau  # J_softmax^T upstream
    torch.testing.assert_close(grad, expected * (4 if scale_by_length else 1))


@pytest.mark.parametrize("value", [1.0, -2.5])
def test_scale_by_sample_has_the_product_gradients_and_saves_only_the_product(value):
    source, upstream = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 3, 4, 4)
    grads, saved = [], []
    for scale in (torch.mul, scale_by_sample):
        weight = torch.tensor(value, requires_grad=True)
        with ActivationMeter(exclude=[upstream]) as meter:
            out = scale(weight, source * 2)
            loss = (out.square() * upstream).sum()  # a consumer that saves the product
        grads.append(torch.autograd.grad(loss, [weight, source]))
        saved.append(meter.saved_bytes)
    torch.testing.assert_close(grads[1], grads[0])
    assert saved == [2 * 2 * 3 * 16 * 4, 2 * 3 * 16 * 4]  # y and the product / the product


def test_gumbel_argmax_samples_follow_softmax_of_logits():
    logits = torch.tensor([1.0, 0.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(3000):
        counts[hard_gumbel_softmax(logits, 1.0, gen)[1]] += 1
    torch.testing.assert_close(counts / 3000, torch.softmax(logits, 0), atol=0.03, rtol=0)


def test_same_generator_state_gives_the_same_samples():
    logits = torch.randn(6)
    draws = [[hard_gumbel_softmax(logits, 1.0, g)[1] for _ in range(30)]
             for g in (torch.Generator().manual_seed(7), torch.Generator().manual_seed(7))]
    assert draws[0] == draws[1] and len(set(draws[0])) > 1


def test_linear_temperature_anneals_from_start_to_end():
    assert linear_temperature(0, 50) == 10.0
    assert linear_temperature(49, 50) == pytest.approx(0.1)
    assert linear_temperature(24.5, 50) == pytest.approx(5.05)
    assert linear_temperature(80, 50) == pytest.approx(0.1)
    assert linear_temperature(0, 1) == pytest.approx(0.1)
    assert linear_temperature(1, 3, start=4.0, end=2.0) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        linear_temperature(-1, 10)
