"""The five methods as ``bench/`` sees them, read from each method's ``model.py`` (its
``INPUT_SIZE``, ``RETRIEVAL`` convention, ``build_model`` and ``load_trained``): native input size,
the way the method's own evaluation turns images into retrieval features, a fresh network, and
the loading of a checkpoint written by the method's ``main.py`` (or the original code), strictly.

A file of another method, or not a checkpoint at all, is a :class:`BenchModelError` that names
the method, the file and what did not match.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch

from common.checkpoint import CheckpointError
from common.eval import Retrieval
from common.runrecord import find_run_record, refuse_another_methods_file

__all__ = ["BENCH_METHODS", "BenchMethod", "BenchModelError", "Retrieval", "load_for_inference",
           "load_method_model", "parse_model_options", "trained_settings"]


class BenchModelError(ValueError):
    """A checkpoint that does not give the method's network; the message says why."""


@dataclass(frozen=True)
class BenchMethod:
    """A method as ``bench/`` sees it, read from its ``<method>/model.py``: the README input
    size, the retrieval convention, and the network fresh or from a trained file."""

    name: str
    input_size: tuple  # (height, width) of the README configuration
    retrieval: Retrieval

    @property
    def model_module(self):
        return importlib.import_module(f"{self.name}.model")

    def fresh(self, options):
        """The network with fresh weights (751 classes, no ImageNet file)."""
        return self.model_module.build_model(751, **{"pretrained": False, **options})

    def load(self, path, options):
        """The network with the weights of ``path`` (class count etc. read from the file)."""
        return self.model_module.load_trained(path, **options)


def _bench_method(name):
    module = importlib.import_module(f"{name}.model")
    return BenchMethod(name, tuple(module.INPUT_SIZE), module.RETRIEVAL)


BENCH_METHODS = {name: _bench_method(name)
                 for name in ("lagnet", "abdnet", "iabnet", "iaunet", "apnet")}


def trained_settings(name, checkpoint=None, size=None, options=None):
    """``(input size, build_model options)`` to use for ``checkpoint``: those given, else the
    ones its training run recorded in ``run.json`` (:mod:`common.runrecord`), else the README's.
    A record of another method is ignored.

    Raises:
        BenchModelError: ``size`` differs from the recorded training size (features of a
            network fed another size than it learnt are not its features).
    """
    size, options = (tuple(size) if size else None), dict(options or {})
    record_path, record = find_run_record(checkpoint)
    if record is not None and record.get("method") == name:
        recorded = tuple(record["input_size"])
        if size is not None and size != recorded:
            raise BenchModelError(f"--size {size[0]} {size[1]} but {checkpoint} was trained at "
                                  f"{recorded[0]}x{recorded[1]} ({record_path}); drop --size to "
                                  f"use it, or pass --size {recorded[0]} {recorded[1]}")
        size = recorded
        options = options or dict(record["model_options"])
    return size or BENCH_METHODS[name].input_size, options


def load_for_inference(name, checkpoint=None, size=None, options=None, device="cpu"):
    """``(network, (height, width), options)``: :func:`trained_settings`, then
    :func:`load_method_model` on ``device``, then one forward pass of a blank image at that size.

    Raises:
        BenchModelError: as those two, or the network does not take inputs of that size (e.g. a
            height whose feature map does not split into the method's stripes).
    """
    size, options = trained_settings(name, checkpoint, size, options)
    network = load_method_model(name, checkpoint, options).to(device)
    try:
        with torch.no_grad():
            network(torch.zeros(1, 3, *size, device=device))
    except (ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        height, width = BENCH_METHODS[name].input_size
        raise BenchModelError(f"the {name} network does not take {size[0]}x{size[1]} inputs "
                              f"({reason}); use its training size, {name}'s README gives "
                              f"{height}x{width}") from None
    return network, size, options


def load_method_model(name, checkpoint=None, options=None):
    """The eval-mode network of method ``name``: fresh weights, or ``checkpoint``'s.

    ``options`` are keyword arguments of the method's ``build_model`` for a run trained with
    other architecture flags or paper-vs-code switches than the README's (e.g. LAG-Net
    ``{"num_attentions": 4, "part_split": "fixed"}``); see :func:`parse_model_options`.
    """
    if name not in BENCH_METHODS:
        raise BenchModelError(f"unknown method {name!r}; choose from {', '.join(BENCH_METHODS)}")
    method, options = BENCH_METHODS[name], dict(options or {})
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BenchModelError(f"{name}: checkpoint {checkpoint} does not exist")
    try:
        refuse_another_methods_file(checkpoint, name, "give the method {method}")
        if checkpoint is None:
            return method.fresh(options).eval()
        return method.load(Path(checkpoint), options).eval()
    except CheckpointError as err:
        advice = ""
        if "does not match the model" in str(err):
            advice = (" (if the run used other architecture flags than the README's, give them "
                      "with --model-option NAME=VALUE)")
        raise BenchModelError(f"{checkpoint} does not load into the {name} network: "
                              f"{err}{advice}") from None
    except (TypeError, ValueError) as err:
        if not options:
            raise
        raise BenchModelError(f"{name}: --model-option {options}: {err} (the names and values "
                              f"are those of {name}/model.py's build_model)") from None


def parse_model_options(items):
    """``["num_attentions=4", "part_split=fixed"]`` -> ``{"num_attentions": 4, "part_split":
    "fixed"}``: values are Python literals (numbers, True/False, lists, tuples), else strings."""
    options = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise BenchModelError(f"--model-option {item!r}: write NAME=VALUE, NAME a keyword "
                                  f"argument of the method's build_model")
        try:
            options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[name] = value
    return options
