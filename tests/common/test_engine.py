"""common/engine.py: the run skeleton every method shares, on a tiny stand-in method."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.checkpoint import CheckpointError
from common.data.dataset import DatasetError
from common.engine import Engine, EvalTarget, open_run, refuse_to_overwrite, resume_file
from common.eval import NonFiniteFeaturesError, Retrieval
from common.runfolder import FolderInUseError
from common.runtime import Distributed, OptionError, RunInterrupted, TrainingDiverged

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RETRIEVAL = Retrieval("bilinear", flip=False, normalize=True, distance="euclidean")


class EpochSampler:
    """A batch sampler with set_epoch, as the identity samplers: 4 batches of 8 indices."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(32, generator=torch.Generator().manual_seed(self.epoch))
        return iter(order.view(4, 8).tolist())

    def __len__(self):
        return 4


def make_data():
    """4 identities x 8 samples of 6-d 'images' (the identity decides the mean); query = the
    first 2 samples of each identity on camera 0, gallery = the rest on camera 1."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 6, generator=generator) + torch.arange(4).repeat_interleave(8)[:, None]
    pids = torch.arange(4).repeat_interleave(8)
    train = torch.utils.data.TensorDataset(images, pids, torch.zeros(32, dtype=torch.long))
    query = [i for i in range(32) if i % 8 < 2]
    gallery = [i for i in range(32) if i % 8 >= 2]

    def loader(indices, camid):
        data = torch.utils.data.TensorDataset(images[indices], pids[indices],
                                              torch.full((len(indices),), camid))
        return torch.utils.data.DataLoader(data, batch_size=16)

    dataset = SimpleNamespace(name="toy", query=query, gallery=gallery)
    train_loader = torch.utils.data.DataLoader(train, batch_sampler=EpochSampler())
    return train_loader, {"toy": EvalTarget(dataset, loader(query, 0), loader(gallery, 1))}


class ToyEngine(Engine):
    name = "Toy"

    def __init__(self, context, max_epoch=4, lr=0.05, poison_epoch=None,
                 eval_before_training=False):
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)
        train_loader, targets = make_data()
        super().__init__(context, model, targets=targets, retrieval=RETRIEVAL,
                         optimizer=optimizer, scheduler=scheduler, train_loader=train_loader,
                         max_epoch=max_epoch, criterion=nn.CrossEntropyLoss(),
                         eval_before_training=eval_before_training)
        self.poison_epoch = poison_epoch
        self.weight_files = []

    def compute_loss(self, batch):
        images, pids, _ = batch
        loss = self.criterion(self.forward(images), pids)
        if self.epoch == self.poison_epoch:
            loss = loss * float("nan")
        return loss, {"xent": loss}

    def evaluation_due(self):
        return self.epoch % 2 == 0

    def save_weights(self, evaluated, is_best):
        torch.save(self.module.state_dict(), self.folder / "latest.pt")
        self.weight_files.append((self.epoch, is_best))
        if is_best:
            torch.save(self.module.state_dict(), self.folder / "best.pt")


def run_toy(folder, capsys=None, **options):
    with open_run(folder, log_name="log.txt", seed=0, cpu=True, distributed=Distributed(),
                  resume_hint="--resume") as context:
        engine = ToyEngine(context, **options)
        engine.fit()
        engine.report_best()
    return engine


def test_a_run_writes_state_weights_history_and_one_results_layout(tmp_path, capsys):
    engine = run_toy(tmp_path / "run")
    folder = tmp_path / "run"
    for name in ("training_state.pt", "latest.pt", "best.pt", "history.json", "loss.png",
                 "metrics.png", "results_best.json", "results_last.json", "log.txt"):
        assert (folder / name).is_file(), name
    history = json.loads((folder / "history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3, 4]
    assert [row["epoch"] for row in history["evaluations"]] == [2, 4]
    assert [row["lr"] for row in history["epochs"]] == pytest.approx([0.05, 0.05, 0.025, 0.025])
    best = json.loads((folder / "results_best.json").read_text())
    assert set(best) == {"method", "kind", "epoch", "re_rank", "retrieval", "targets"}
    row = best["targets"]["toy"]
    assert (row["dataset"], row["num_query"], row["num_gallery"]) == ("toy", 8, 24)
    best_row = max(history["evaluations"], key=lambda r: r["rank1"])
    assert best["epoch"] == best_row["epoch"] and row["rank1"] == pytest.approx(best_row["rank1"])
    assert best["retrieval"]["distance"] == "euclidean"
    out = capsys.readouterr().out
    assert "Toy (best, epoch" in out and "mINP" in out
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert f"saved epoch 4 to {folder} (the folder holds {size / 1e6:,.0f} MB)" in (
        folder / "log.txt").read_text()
    assert engine.weight_files[-1][0] == 4


def test_the_evaluation_before_training_is_the_first_point_and_never_the_best(tmp_path, capsys):
    engine = run_toy(tmp_path / "run", eval_before_training=True, lr=0.0)  # nothing learns
    folder = tmp_path / "run"
    history = json.loads((folder / "history.json").read_text())
    first, *trained = history["evaluations"]
    assert first["epoch"] == 0 and first["before_training"] is True
    assert [row["epoch"] for row in trained] == [2, 4]
    # with lr 0 every evaluation scores the same: the best is still a trained epoch (the earliest)
    assert first["rank1"] == trained[0]["rank1"]
    assert json.loads((folder / "results_best.json").read_text())["epoch"] == 2
    before = json.loads((folder / "results_before_training.json").read_text())
    assert before["kind"] == "before_training" and before["epoch"] == 0
    assert before["targets"]["toy"]["rank1"] == pytest.approx(first["rank1"])
    assert "Toy (before training, epoch 0)" in capsys.readouterr().out
    assert engine.best()["epoch"] == 2


def test_resume_is_exact_and_rewrites_weight_files_a_kill_left_out(tmp_path):
    straight = run_toy(tmp_path / "straight")
    run_toy(tmp_path / "split", max_epoch=3)
    (tmp_path / "split" / "latest.pt").unlink()  # killed after the state, before the weights
    with open_run(tmp_path / "split", log_name="log.txt", seed=0, cpu=True,
                  distributed=Distributed()) as context:
        engine = ToyEngine(context)
        engine.resume(context.folder / "training_state.pt")
        assert (context.folder / "latest.pt").is_file()  # rewritten from the resumed state
        engine.fit()
    for a, b in zip(straight.module.parameters(), engine.module.parameters()):
        assert torch.equal(a, b)
    assert engine.history.state_dict() == straight.history.state_dict()
    with open_run(tmp_path / "split", log_name="log.txt", seed=0, cpu=True,
                  distributed=Distributed()) as context:
        finished = ToyEngine(context)
        finished.resume(context.folder / "training_state.pt")
        finished.fit()
    assert finished.epoch == engine.epoch
    assert (f"nothing to train: the run has finished {engine.epoch} of {engine.epoch} epochs"
            in (tmp_path / "split" / "log.txt").read_text())


def test_an_unreadable_test_image_keeps_the_epochs_training(tmp_path):
    class UnreadableQuery(ToyEngine):
        def evaluate(self, on_target=None):
            raise DatasetError("cannot read image query/0001_c1.jpg")

    with open_run(tmp_path / "run", log_name="log.txt", seed=0, cpu=True,
                  distributed=Distributed(), resume_hint="--resume x") as context:
        engine = UnreadableQuery(context)
        with pytest.raises(DatasetError, match="cannot read image"):
            engine.fit()
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=False)
    assert (state["epoch"], state["evaluated"]) == (2, False)  # the first evaluation is due at 2
    assert "epoch 2 is saved unevaluated; after fixing the data, continue with --resume x" in (
        tmp_path / "run" / "log.txt").read_text()


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_files(tmp_path):
    with pytest.raises(TrainingDiverged) as diverged:
        run_toy(tmp_path / "run", poison_epoch=2)
    message = str(diverged.value)
    assert "training diverged in epoch 3/4, step 1 (loss nan)" in message
    assert "training_state.pt" in message and "lower the learning rate" in message
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_an_exploding_loss_counts_as_divergence(tmp_path):
    with pytest.raises(TrainingDiverged, match="nothing saved yet"):
        run_toy(tmp_path / "run", lr=1e9)


def test_sigterm_ends_the_run_with_where_to_continue(tmp_path):
    class Interrupted(ToyEngine):
        def after_epoch(self):
            super().after_epoch()
            if self.epoch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    with open_run(tmp_path / "run", log_name="log.txt", seed=0, cpu=True,
                  distributed=Distributed(), resume_hint="--resume x") as context:
        engine = Interrupted(context)
        with pytest.raises(RunInterrupted) as interrupted:
            engine.fit()
    assert "interrupted after epoch 2 (evaluating or saving it)" in str(interrupted.value)
    assert "training_state.pt; continue with --resume x" in str(interrupted.value)
    assert interrupted.value.exit_status == 143  # 128 + SIGTERM, as a shell reports it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_non_finite_features_name_the_weights(tmp_path):
    with open_run(tmp_path / "run", log_name="log.txt", seed=0, cpu=True,
                  distributed=Distributed()) as context:
        engine = ToyEngine(context)
        engine.weights_source = "bad.pt"
        with torch.no_grad():
            engine.module[0].weight[0, 0] = float("nan")
        with pytest.raises(NonFiniteFeaturesError, match=r"non-finite.*\(weights: bad.pt\)"):
            engine.evaluate()
    assert not (tmp_path / "run" / "results_evaluate.json").exists()


def test_one_run_per_folder_and_stale_temporary_files_removed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = folder / ".training_state.pt.abc123.tmp"
    stale.write_bytes(b"partial")
    with open_run(folder, log_name="log.txt", seed=0, cpu=True, distributed=Distributed()):
        assert not stale.exists()
        assert "partial file left by an interrupted run" in (folder / "log.txt").read_text()
        errors = []

        def second_run():  # another process would see the same: flock is per open file
            try:
                with open_run(folder, log_name="log2.txt", seed=0, cpu=True,
                              distributed=Distributed()):
                    pass
            except FolderInUseError as err:
                errors.append(str(err))

        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join()
        assert errors and f"pid {os.getpid()}" in errors[0] and str(folder) in errors[0]
    with open_run(folder, log_name="log.txt", seed=0, cpu=True, distributed=Distributed()):
        pass  # released on exit: the next run gets the folder


def test_a_lock_of_a_killed_process_does_not_block(tmp_path):
    folder = tmp_path / "run"
    code = (f"import os, sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); "
            f"from common.runfolder import RunFolder; "
            f"RunFolder({str(folder)!r}).__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (folder / ".run.lock").exists()
    with open_run(folder, log_name="log.txt", seed=0, cpu=True, distributed=Distributed()):
        pass


def test_the_table_warns_when_no_query_has_a_valid_match(tmp_path, capsys):
    with open_run(tmp_path / "run", log_name="log.txt", seed=0, cpu=True,
                  distributed=Distributed()) as context:
        engine = ToyEngine(context)
        for target in engine.targets.values():  # query and gallery on one camera
            target.gallery_loader.dataset.tensors[2].zero_()
        engine.report("evaluate", engine.evaluate())
    out = capsys.readouterr().out
    assert "on toy no query has a valid match" in out
    payload = json.loads((tmp_path / "run" / "results_evaluate.json").read_text())
    assert payload["targets"]["toy"]["num_valid_queries"] == 0
    assert np.isclose(payload["targets"]["toy"]["mAP"], 0.0)


def test_a_saved_run_is_never_overwritten_by_a_new_one(tmp_path):
    refuse_to_overwrite(tmp_path / "training_state.pt", "continue it with --resume")  # none yet
    (tmp_path / "training_state.pt").write_bytes(b"state")
    with pytest.raises(OptionError) as err:
        refuse_to_overwrite(tmp_path / "training_state.pt", "continue it with --resume")
    assert str(err.value) == (f"{tmp_path} already holds a run (training_state.pt); continue it "
                              f"with --resume")


def test_the_resume_file_of_a_torchreid_style_command_line(tmp_path):
    state = tmp_path / "training_state.pth.tar"
    assert resume_file("", state, evaluating=False) is None  # a new run in an empty folder
    with pytest.raises(CheckpointError, match="--resume nothing.tar does not exist; pass it"):
        resume_file("nothing.tar", state, evaluating=False, expected="; pass it")
    state.write_bytes(b"state")
    assert resume_file(str(state), state, evaluating=False) == state
    assert resume_file("", state, evaluating=True) is None  # evaluating writes no state
    with pytest.raises(OptionError, match=f"continue it with --resume {state}, or pick another "
                                          f"--save-dir"):
        resume_file("", state, evaluating=False)
    earlier = tmp_path / "checkpoint_ep1.pth.tar"
    earlier.write_bytes(b"weights")
    with pytest.raises(OptionError, match=f"resuming from {earlier} here would overwrite it: "
                                          f"continue that run with --resume {state}"):
        resume_file(str(earlier), state, evaluating=False)
    assert resume_file(str(earlier), state, evaluating=True) == earlier
    with pytest.raises(CheckpointError, match=f"--resume {tmp_path} is a folder"):
        resume_file(str(tmp_path), state, evaluating=False)
