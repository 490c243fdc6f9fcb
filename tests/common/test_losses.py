import math

import pytest
import torch
import torch.nn.functional as F

from common.losses import CrossEntropyLabelSmooth, TripletLoss


def test_label_smoothing_against_the_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_p = F.log_softmax(logits, 1)[0]
    eps = 0.1
    expected = -((1 - eps + eps / 3) * log_p[0] + eps / 3 * log_p[1] + eps / 3 * log_p[2])
    loss = CrossEntropyLabelSmooth(3, eps)(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(expected.item())
    plain = CrossEntropyLabelSmooth(3, 0.0)(logits, torch.tensor([2]))
    assert plain.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([2])).item())


def test_batch_hard_triplet_by_hand():
    # 1-D features 0, 1 (id 0) and 3, 6 (id 1).
    features = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # hardest (positive, negative) per anchor: (1, 3), (1, 2), (3, 2), (3, 5)
    gaps = torch.tensor([1 - 3, 1 - 2, 3 - 2, 3 - 5], dtype=torch.float)
    loss = TripletLoss(margin=1.2)(features, labels)
    assert loss.item() == pytest.approx(F.relu(gaps + 1.2).mean().item(), abs=1e-5)
    soft = TripletLoss(soft_margin=True)(features, labels)
    assert soft.item() == pytest.approx(F.softplus(gaps).mean().item(), abs=1e-5)


def test_cosine_triplet_and_single_identity_error():
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = TripletLoss(margin=0.3, metric="cosine")(features, labels)
    d = lambda a, b: 1 - (features[a] @ features[b]) / (features[a].norm() * features[b].norm())
    anchor0 = F.relu(d(0, 1) - min(d(0, 2), d(0, 3)) + 0.3)
    assert loss.item() >= anchor0.item() / 4 - 1e-6 and math.isfinite(loss.item())
    with pytest.raises(ValueError, match="at least two identities"):
        TripletLoss()(features, torch.zeros(4, dtype=torch.long))


def test_label_smoothing_with_a_fixed_class_count_as_apnet_releases_it():
    # APNet's code smooths with K = 751 on every dataset: on 702 classes the target mass is
    # 1 - 0.1 + 702 * 0.1 / 751 < 1
    logits = torch.randn(3, 702)
    targets = torch.tensor([0, 5, 701])
    loss = CrossEntropyLabelSmooth(702, epsilon=0.1, smoothing_classes=751)(logits, targets)
    log_probs = torch.log_softmax(logits, dim=1)
    expected = -(0.9 * log_probs[torch.arange(3), targets] + 0.1 / 751 * log_probs.sum(1)).mean()
    torch.testing.assert_close(loss, expected)
