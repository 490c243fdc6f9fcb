"""O.F. and O.W. (abdnet.md §3.3, §3.4) on matrices whose estimates are exact."""


import pytest
import torch

from common.layers.orthogonality import (OFPenalty, OWPenalty, estimate_eigenvalue_range,
                                 rayleigh_after_one_step)


def test_one_power_step():
    gram = torch.diag(torch.tensor([4.0, 1.0]))
    start = torch.ones(2, 1)
    assert rayleigh_after_one_step(gram, start).item() == pytest.approx(65 / 17)


def test_eigenvalue_range_on_a_diagonal_matrix_from_chosen_starts():
    gram = torch.diag(torch.tensor([4.0, 1.0]))
    starts = iter([torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])])
    largest, smallest = estimate_eigenvalue_range(gram, lambda shape: next(starts))
    assert (largest.item(), smallest.item()) == pytest.approx((4.0, 1.0))


def rank_one_maps(values):
    """(B, 2, 1, W) maps whose two channels are equal: G = |a|^2 [[1, 1], [1, 1]] per sample,
    eigenvalues 2 |a|^2 and 0, which one power step finds exactly from any start."""
    rows = torch.tensor(values)
    return torch.stack([rows, rows], dim=1)[:, :, None, :]


def test_of_penalty_scaling():
    torch.manual_seed(0)
    maps = rank_one_maps([[1.0, 2.0], [0.0, 1.0]])  # |a|^2 = 5 and 1
    batch_sum = 2 * 5.0 + 2 * 1.0  # per sample: 2 |a|^2
    penalty = OFPenalty(beta=1.0, positions=("after",))
    # summed over the batch and divided by B / 32
    assert penalty({"after": [maps]}).item() == pytest.approx(batch_sum * 32 / 2, rel=1e-5)
    # averaged over parts; the shallow map counts 0.01
    two_parts = penalty({"after": [maps, 2 * maps]}).item()
    assert two_parts == pytest.approx((1 + 4) / 2 * batch_sum * 16, rel=1e-5)
    shallow = OFPenalty(beta=1.0, positions=("intermediate",))({"intermediate": [maps]}).item()
    assert shallow == pytest.approx(0.01 * batch_sum * 16, rel=1e-5)
    assert OFPenalty(positions=("cam",))({"after": [maps]}) == 0.0
    with pytest.raises(ValueError, match="unknown O.F. positions"):
        OFPenalty(positions=("res5",))


def test_ow_penalty_is_squared_and_skips_single_output_layers():
    conv = torch.nn.Conv2d(1, 2, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2).expand(2, 1, 1, 2))
    assert OWPenalty(beta=1e-3)([conv]).item() == pytest.approx(10 * 1e-3 * (2 * 5.0) ** 2, rel=1e-5)
    assert OWPenalty()([torch.nn.Conv2d(3, 1, 1)]) == 0.0
