"""The five methods as ``bench/`` sees them: native input size, the way each method's own
evaluation turns images into retrieval features, a fresh network, and the loading of a
checkpoint written by each method's ``main.py`` (or the original code), strictly.

A file of another method, or not a checkpoint at all, is a :class:`BenchModelError` that names
the method, the file and what did not match.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked

__all__ = ["BENCH_METHODS", "BenchMethod", "BenchModelError", "Retrieval", "load_method_model",
           "parse_model_options"]


class BenchModelError(ValueError):
    """A checkpoint that does not give the method's network; the message says why."""


@dataclass(frozen=True)
class Retrieval:
    """How a method's evaluation (its trainer's ``test``, with its README flags) makes and
    compares features: the test-time resize, flip averaging, L2 normalisation, the distance."""

    interpolation: str  # of the resize to the input size: "bilinear" or "bicubic"
    flip: bool  # average the features of the image and of its mirror
    normalize: bool  # L2-normalise the (averaged) feature
    distance: str  # common.eval.compute_distance_matrix metric


@dataclass(frozen=True)
class BenchMethod:
    name: str
    input_size: tuple  # (height, width) of the README configuration
    retrieval: Retrieval
    fresh: Callable  # (options) -> the network with fresh weights (751 classes, no ImageNet file)
    load: Callable  # (path, options) -> the network with the checkpoint's weights


# Each loader reads the class count (and for IAUnet/APNet the architecture) from the file;
# ``options`` are the method's build_model keyword arguments for everything else (for APNet-S,
# agent=rga_s, the input size it was built for when not 384x192: input_size=[H,W]).

def _lagnet_fresh(options):
    from lagnet.model import build_model
    return build_model(751, pretrained=False, **options)


def _lagnet_load(path, options):
    from lagnet.model import build_model, load_weights, read_weights
    state = read_weights(path)
    classifier = state.get("classifier_gs.classifier.0.weight")
    model = build_model(int(classifier.shape[0]) if classifier is not None else 751,
                        pretrained=False, **options)
    load_weights(model, state, source=str(path))
    return model


def _abdnet_fresh(options):
    from abdnet.model import build_model
    return build_model(751, pretrained=False, **options)


def _two_branch_load(build_model, rename_keys=None):
    def load(path, options):
        from common.torchreid2018.released import load_released_checkpoint, read_released_checkpoint
        released = read_released_checkpoint(path, rename_keys)
        model = build_model(released.num_classes or 751, pretrained=False, **options)
        load_released_checkpoint(model, released)
        return model
    return load


def _abdnet_load(path, options):
    from abdnet.model import build_model
    return _two_branch_load(build_model)(path, options)


def _iabnet_fresh(options):
    from iabnet.model import build_model
    return build_model(751, pretrained=False, **options)


def _iabnet_load(path, options):
    from iabnet.model import build_model, rename_original_keys
    return _two_branch_load(build_model, rename_original_keys)(path, options)


def _state_of(path, key):
    checkpoint = load_checkpoint(path)
    state = checkpoint.get(key, checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "classifier.weight" not in state:
        raise CheckpointError(f"{path} holds no '{key}' state_dict with a classifier.weight")
    return state


def _iaunet_fresh(options):
    from iaunet.model import build_model
    return build_model(751, pretrained=False, **options)


def _iaunet_load(path, options):
    from iaunet.model import build_model
    state = _state_of(path, "state_dict")
    arch = "ianet" if "layer2.4.W1.weight" in state else "iaunet"
    model = build_model(int(state["classifier.weight"].shape[0]), arch=arch, pretrained=False,
                        **options)
    load_state_dict_checked(model, state, source=str(path))
    return model


def _apnet_fresh(options):
    from apnet.model import build_model
    return build_model(751, **{"level": 2, **options}, pretrained=False)


def _apnet_load(path, options):
    from apnet.model import architecture_of, build_model
    state = _state_of(path, "model")
    model = build_model(int(state["classifier.weight"].shape[0]), pretrained=False,
                        **{**architecture_of(state), **options})
    load_state_dict_checked(model, state, source=str(path))
    return model


# lagnet/trainer.py and apnet/trainer.py test with flip + L2 + Euclidean; the ABD/IAB trainer
# (common/torchreid2018) with --flip-eval (README) and squared Euclidean; iaunet/trainer.py with
# --flip_cnt 1 and the released default --distance consine.
_TORCHREID2018 = Retrieval("bilinear", flip=True, normalize=False, distance="sqeuclidean")
BENCH_METHODS = {
    "lagnet": BenchMethod("lagnet", (384, 128), Retrieval("bicubic", True, True, "euclidean"),
                          _lagnet_fresh, _lagnet_load),
    "abdnet": BenchMethod("abdnet", (384, 128), _TORCHREID2018, _abdnet_fresh, _abdnet_load),
    "iabnet": BenchMethod("iabnet", (384, 128), _TORCHREID2018, _iabnet_fresh, _iabnet_load),
    "iaunet": BenchMethod("iaunet", (256, 128), Retrieval("bicubic", False, False, "cosine"),
                          _iaunet_fresh, _iaunet_load),
    "apnet": BenchMethod("apnet", (384, 192), Retrieval("bilinear", True, True, "euclidean"),
                         _apnet_fresh, _apnet_load),
}


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
        if checkpoint is None:
            return method.fresh(options).eval()
        return method.load(Path(checkpoint), options).eval()
    except CheckpointError as err:
        raise BenchModelError(f"{checkpoint} is not a {name} checkpoint that this network can "
                              f"load: {err}. If the run used other architecture flags than the "
                              f"README's, give them with --model-option NAME=VALUE") from None
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
