"""A run's history: losses per epoch, metrics per evaluation, best, JSON and plots."""

import json

import pytest

from common.history import LossMeter, TrainingHistory


def test_history_records_finds_the_best_and_writes_its_files(tmp_path):
    history = TrainingHistory()
    history.log_epoch(1, 3e-4, {"xent": 2.0, "total": 2.5})
    history.log_epoch(2, 3e-5, {"xent": 1.0, "total": 1.2})
    history.log_evaluation(1, {"mAP": 0.30, "rank1": 0.50})
    history.log_evaluation(2, {"mAP": 0.40, "rank1": 0.45})
    assert history.best()["epoch"] == 2 and history.best("rank1")["epoch"] == 1
    history.write(tmp_path)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["epochs"][1] == {"epoch": 2, "lr": pytest.approx(3e-5),
                                  "losses": {"xent": 1.0, "total": 1.2}}
    for plot in ("loss.png", "metrics.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    restored = TrainingHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.state_dict() == history.state_dict()


def test_loss_meter_averages_over_batches():
    meter = LossMeter()
    assert meter.means() == {}
    meter.update({"a": 1.0})
    meter.update({"a": 2.0})
    assert meter.means() == {"a": 1.5}


def test_a_nan_evaluation_is_never_the_best():
    history = TrainingHistory()
    history.log_evaluation(1, {"mAP": 0.2, "rank1": 0.3})
    history.log_evaluation(2, {"mAP": float("nan"), "rank1": float("nan")})
    history.log_evaluation(3, {"mAP": 0.2, "rank1": 0.1})
    assert history.best()["epoch"] == 1  # the earliest of the ties; NaN skipped
    assert history.best("rank1")["epoch"] == 1
    only_nan = TrainingHistory()
    only_nan.log_evaluation(1, {"mAP": float("nan")})
    assert only_nan.best() is None
