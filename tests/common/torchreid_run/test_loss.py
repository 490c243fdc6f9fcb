"""The run's loss composition and phases (abdnet.md §3), on the two-branch frame."""

import pytest
import torch
import torch.nn as nn

from common.layers.resnet import build_resnet50
from common.layers.two_branch import TwoBranchNet
from common.losses import CrossEntropyLabelSmooth, TripletLoss
from common.torchreid_run.loss import TrainingLoss


def two_branch_net(num_classes):
    return TwoBranchNet(build_resnet50(last_stride=1, pretrained=False), nn.Identity(),
                        num_classes)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    model = two_branch_net(5).train()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    outputs = model(torch.randn(8, 3, 64, 32))
    return model, outputs, labels


def test_readme_loss_is_ce_plus_weighted_triplet_and_regularisers(batch):
    model, outputs, labels = batch
    loss = TrainingLoss(5, criterion="htri", label_smooth=True, margin=1.2, lambda_htri=0.1,
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
    total, terms = TrainingLoss(5)(model, outputs, labels, epoch=0)
    assert set(terms) == {"xent"}
    with pytest.raises(ValueError, match="criterion"):
        TrainingLoss(5, criterion="triplet")


def test_ow_reads_the_convs_of_its_scope(batch):
    model, outputs, labels = batch
    stem = model.common_branch.backbone1[0]
    model.zero_grad()
    _, terms = TrainingLoss(5, use_ow=True, ow_scope="stem_only")(model, outputs, labels, epoch=0)
    terms["ow"].backward(retain_graph=True)
    assert stem.weight.grad is not None and model.common_branch.backbone2[0][0].conv1.weight.grad is None
    with pytest.raises(ValueError, match="stem_only"):
        TrainingLoss(5, use_ow=True, ow_scope="paper")
