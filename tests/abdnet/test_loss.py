"""ABD-Net's loss composition and phases (abdnet.md §3)."""

import pytest
import torch

from abdnet.loss import ABDLoss
from abdnet.model import build_model
from common.losses import CrossEntropyLabelSmooth, TripletLoss
from abdnet.regularizers import OWPenalty


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    model = build_model(5, pretrained=False).train()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    outputs = model(torch.randn(8, 3, 64, 32))
    return model, outputs, labels


def test_readme_loss_is_ce_plus_weighted_triplet_and_regularisers(batch):
    model, outputs, labels = batch
    loss = ABDLoss(5, criterion="htri", label_smooth=True, margin=1.2, lambda_htri=0.1,
                   use_of=True, use_ow=True)
    total, terms = loss(model, outputs, labels, epoch=0)
    ce = sum(CrossEntropyLabelSmooth(5, 0.1)(l, labels) for l in outputs[1]) / 3
    triplet = sum(TripletLoss(1.2)(f, labels) for f in outputs[2]) / 3
    torch.testing.assert_close(terms["xent"], ce)
    torch.testing.assert_close(terms["htri"], 0.1 * triplet)
    assert set(terms) == {"xent", "htri", "ow"}  # O.F. starts at main epoch 23
    assert set(loss(model, outputs, labels, epoch=23)[1]) == {"xent", "htri", "ow", "of"}
    assert set(loss(model, outputs, labels, epoch=30, fixbase=True)[1]) == {"xent", "htri"}
    torch.testing.assert_close(total, sum(terms.values()))


def test_xent_only_and_bad_criterion(batch):
    model, outputs, labels = batch
    total, terms = ABDLoss(5)(model, outputs, labels, epoch=0)
    assert set(terms) == {"xent"}
    with pytest.raises(ValueError, match="criterion"):
        ABDLoss(5, criterion="triplet")


def test_ow_scope_stem_only_is_one_layer_and_all_is_the_whole_trunk():
    model = build_model(10, pretrained=False)
    assert OWPenalty(scope="stem_only").conv_layers(model) == [model.common_branch.backbone1[0]]
    # conv1 + layer1..layer3 (43 convs incl. downsamples) + two layer4 copies (10 each)
    assert len(OWPenalty(scope="all").conv_layers(model)) == 63
    loss = OWPenalty(scope="stem_only")(model)
    loss.backward()
    assert model.common_branch.backbone1[0].weight.grad is not None
    with pytest.raises(ValueError, match="stem_only"):
        OWPenalty(scope="paper")
