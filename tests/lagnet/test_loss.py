"""The --loss grammar and the L2 feature-centre regulariser (lagnet.md §4)."""

import pytest
import torch
import torch.nn.functional as F

from common.losses import TripletLoss
from lagnet.loss import FeatureCenterLoss, LAGLoss, LossTerm, parse_loss_string
from lagnet.model import LAGOutputs


def test_parse_the_readme_loss_string():
    assert parse_loss_string("1*CrossEntropy+2*Triplet+1*L2") == [
        LossTerm(1.0, "CrossEntropy"), LossTerm(2.0, "Triplet"), LossTerm(1.0, "L2")]
    assert parse_loss_string("0.5*Triplet") == [LossTerm(0.5, "Triplet")]


@pytest.mark.parametrize("text, message", [
    ("CrossEntropy", "weight\\*Name"),
    ("1*CrossEntropy+", "weight\\*Name"),
    ("one*Triplet", "not a number"),
    ("1*crossentropy", "unknown loss 'crossentropy'"),
    ("1*Center", "unknown loss 'Center'"),
    ("1*Triplet+1*Triplet", "appears twice"),
])
def test_bad_loss_strings_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_loss_string(text)


def test_feature_center_first_visit_costs_one_and_moves_beta():
    loss = FeatureCenterLoss(num_classes=3, feature_dim=2, beta=0.05)
    f = F.normalize(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), dim=1)
    labels = torch.tensor([2, 0])
    assert loss(f, labels).item() == pytest.approx(1.0)  # ||f - 0||^2 averaged, f unit-norm
    torch.testing.assert_close(loss.feature_center[2], 0.05 * f[0])
    torch.testing.assert_close(loss.feature_center[0], 0.05 * f[1])
    assert torch.equal(loss.feature_center[1], torch.zeros(2))
    # second visit: the centre is normalised before use, so the same f costs nothing
    assert loss(f, labels).item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(loss.feature_center[2], 0.05 * f[0] + 0.05 * (f[0] - f[0]))


def test_feature_center_keeps_the_last_write_of_a_class():
    loss = FeatureCenterLoss(num_classes=2, feature_dim=2, beta=0.5)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss(f, torch.tensor([1, 1]))
    torch.testing.assert_close(loss.feature_center[1], torch.tensor([0.0, 0.5]))


def test_feature_center_is_frozen_in_eval_mode():
    loss = FeatureCenterLoss(num_classes=2, feature_dim=2).eval()
    loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert torch.equal(loss.feature_center, torch.zeros(2, 2))


def test_lag_loss_weights_and_averages_the_heads():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1])
    logits = tuple(torch.randn(4, 3) for _ in range(7))
    embeddings = tuple(torch.randn(4, 8) for _ in range(5))
    matrix = F.normalize(torch.randn(4, 6), dim=1)
    outputs = LAGOutputs(torch.zeros(4, 1), matrix, embeddings, logits)
    criterion = LAGLoss(parse_loss_string("1*CrossEntropy+2*Triplet+1*L2"), num_classes=3,
                        margin=1.2, feature_dim=6)
    total, terms = criterion(outputs, labels)
    ce = sum(F.cross_entropy(l, labels) for l in logits) / 7
    torch.testing.assert_close(terms["CrossEntropy"], ce)
    triplet = sum(TripletLoss(1.2)(e, labels) for e in embeddings) / 5
    torch.testing.assert_close(terms["Triplet"], 2 * triplet)
    assert terms["L2"].item() == pytest.approx(1.0)
    torch.testing.assert_close(total, ce + 2 * triplet + terms["L2"])
    assert LAGLoss(parse_loss_string("1*Triplet"), num_classes=3).center is None
