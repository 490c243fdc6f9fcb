import hashlib

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader

from common.data import ImageDataset, RandomIdentitySampler, load_market1501
from common.data.synthetic import SyntheticConfig, generate
from common.data.transforms import build_test_transform, build_train_transform
from common.eval import compute_distance_matrix, evaluate_rank, extract_features
from common.losses import CrossEntropyLabelSmooth, TripletLoss

SMALL = SyntheticConfig(num_ids=40, images_per_id=6, num_distractors=5, num_junk=5, seed=7)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synthetic"), SMALL)


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_market_layout_with_distractors_and_junk(synthetic):
    dataset = load_market1501(synthetic, keep_junk=True)
    assert dataset.num_train_pids == 20 and len(dataset.train) == 20 * 6
    gallery_pids = {s.pid for s in dataset.gallery}
    assert 0 in gallery_pids and -1 in gallery_pids
    assert Image.open(dataset.train[0].path).size == (64, 128)
    q = [(s.pid, s.camid) for s in dataset.query]
    g = [(s.pid, s.camid) for s in dataset.gallery]
    valid = [any(gp == qp and gc != qc for gp, gc in g) for qp, qc in q]
    assert all(valid)


def test_deterministic_and_reused(tmp_path, synthetic):
    other = generate(tmp_path / "again", SMALL)
    assert digest(other) == digest(synthetic)
    before = {p: p.stat().st_mtime_ns for p in other.rglob("*.jpg")}
    generate(other, SMALL)  # same settings: kept as it is
    assert before == {p: p.stat().st_mtime_ns for p in other.rglob("*.jpg")}
    changed = generate(tmp_path / "again", SyntheticConfig(**{**SMALL.__dict__, "seed": 8}))
    assert digest(changed) != digest(synthetic)


def colour_histograms(samples, bins=8):
    features = []
    for sample in samples:
        pixels = np.asarray(Image.open(sample.path)).reshape(-1, 3) // (256 // bins)
        index = pixels[:, 0] * bins * bins + pixels[:, 1] * bins + pixels[:, 2]
        hist = np.bincount(index, minlength=bins ** 3).astype(np.float32)
        features.append(np.sqrt(hist / hist.sum()))
    return np.stack(features)


def test_a_colour_histogram_does_not_solve_it(synthetic):
    dataset = load_market1501(synthetic)
    dist = compute_distance_matrix(colour_histograms(dataset.query),
                                   colour_histograms(dataset.gallery))
    result = evaluate_rank(dist, [s.pid for s in dataset.query], [s.pid for s in dataset.gallery],
                           [s.camid for s in dataset.query], [s.camid for s in dataset.gallery])
    assert result["mAP"] < 0.5, result["mAP"]


def small_cnn():
    layers = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 128), (128, 256)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                   nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.mark.slow
def test_training_beats_an_untrained_network(tmp_path):
    torch.manual_seed(0)
    dataset = load_market1501(generate(tmp_path, SyntheticConfig(num_ids=100, seed=1)))
    test_transform = build_test_transform(128, 64)

    def mean_ap(net):
        def features(samples):
            loader = DataLoader(ImageDataset(samples, test_transform), batch_size=64)
            return extract_features(net, loader, progress=False)[0]
        dist = compute_distance_matrix(features(dataset.query), features(dataset.gallery))
        return evaluate_rank(dist, [s.pid for s in dataset.query],
                             [s.pid for s in dataset.gallery], [s.camid for s in dataset.query],
                             [s.camid for s in dataset.gallery])["mAP"]

    net, head = small_cnn(), nn.Linear(256, dataset.num_train_pids)
    untrained = mean_ap(net)
    sampler = RandomIdentitySampler([s.pid for s in dataset.train], 32, 4)
    loader = DataLoader(ImageDataset(dataset.train, build_train_transform(128, 64, erasing=0.5)),
                        batch_size=32, sampler=sampler)
    optimizer = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=3e-3)
    cross_entropy = CrossEntropyLabelSmooth(dataset.num_train_pids)
    triplet = TripletLoss(margin=0.3)
    for epoch in range(6):
        sampler.set_epoch(epoch)
        net.train()
        for images, pids, _ in loader:
            features = net(images)
            loss = cross_entropy(head(features), pids) + triplet(features, pids)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    trained = mean_ap(net)
    assert trained > 3 * untrained and trained > 0.1, (untrained, trained)
