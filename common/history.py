"""A training run's history: losses and learning rate per epoch, metrics per evaluation.

Saved as JSON next to the checkpoints and drawn as two PNG plots (losses; mAP and rank-1), the
record every method's ``main.py`` leaves in its output folder.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from common.files import atomic_write  # noqa: E402

__all__ = ["LossMeter", "TrainingHistory"]


class LossMeter:
    """The running mean of each named loss term over one epoch's batches."""

    def __init__(self):
        self.sums, self.batches = {}, 0

    def update(self, terms):
        """Adds one batch's terms (tensors or numbers)."""
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach() if hasattr(
                value, "detach") else value)
        self.batches += 1

    def means(self):
        return {name: value / max(self.batches, 1) for name, value in self.sums.items()}


class TrainingHistory:
    """``epochs``: dicts with ``epoch``, ``lr`` and ``losses`` (name -> mean value);
    ``evaluations``: dicts with ``epoch`` and the metrics (``mAP``, ``rank1``, ...) as fractions;
    the evaluation of the weights before training (``--eval-before-training``) also has
    ``"before_training": True``."""

    def __init__(self):
        self.epochs = []
        self.evaluations = []

    def log_epoch(self, epoch, lr, losses):
        self.epochs.append({"epoch": int(epoch), "lr": float(lr),
                            "losses": {name: float(value) for name, value in losses.items()}})

    def log_evaluation(self, epoch, metrics, before_training=False):
        row = {"epoch": int(epoch), **{name: float(value) for name, value in metrics.items()}}
        if before_training:
            row["before_training"] = True
        self.evaluations.append(row)

    def best(self, key="mAP"):
        """The evaluation with the highest ``key`` (the earliest on ties; a NaN never wins; the
        one before training is a reference point, never the best), or None."""
        finite = [row for row in self.evaluations
                  if math.isfinite(row[key]) and not row.get("before_training")]
        if not finite:
            return None
        return max(finite, key=lambda row: row[key])  # max keeps the first of equal rows

    def state_dict(self):
        return {"epochs": list(self.epochs), "evaluations": list(self.evaluations)}

    def load_state_dict(self, state):
        self.epochs = list(state["epochs"])
        self.evaluations = list(state["evaluations"])

    def write_json(self, path):
        with atomic_write(path, "w") as handle:
            json.dump(self.state_dict(), handle, indent=2)
            handle.write("\n")

    def write(self, folder):
        """``history.json``, ``loss.png`` and ``metrics.png`` in ``folder``: a run's record."""
        self.write_json(folder / "history.json")
        self.plot(folder / "loss.png", folder / "metrics.png")

    def plot(self, loss_path, metrics_path):
        """Writes the loss curves and the mAP / rank-1 curves; returns the paths written."""
        written = []
        if self.epochs:
            figure, axis = plt.subplots(figsize=(6, 4))
            epochs = [row["epoch"] for row in self.epochs]
            for name in self.epochs[-1]["losses"]:
                axis.plot(epochs, [row["losses"].get(name, float("nan")) for row in self.epochs],
                          label=name)
            axis.set(xlabel="epoch", ylabel="loss (weighted)", title="Training loss")
            axis.legend()
            axis.grid(alpha=0.3)
            written.append(_save(figure, loss_path))
        if self.evaluations:
            figure, axis = plt.subplots(figsize=(6, 4))
            epochs = [row["epoch"] for row in self.evaluations]
            for key, label in (("mAP", "mAP"), ("rank1", "rank-1")):
                axis.plot(epochs, [100 * row[key] for row in self.evaluations], marker="o",
                          label=label)
            first = self.evaluations[0]
            if first.get("before_training"):
                axis.annotate("before training", (first["epoch"], 100 * first["mAP"]),
                              textcoords="offset points", xytext=(2, 8), fontsize=8)
            axis.set(xlabel="epoch", ylabel="%", title="Evaluation", ylim=(0, 100))
            axis.legend()
            axis.grid(alpha=0.3)
            written.append(_save(figure, metrics_path))
        return written


def _save(figure, path):
    figure.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)
    return path
