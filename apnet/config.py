"""APNet's configuration: the keys and defaults of the original ``config/defaults.py``
(``../shared/specs/apnet.md`` §3.2), a YAML file merged over them, then ``KEY VALUE`` overrides
from the command line, as the original's yacs ``merge_from_file`` / ``merge_from_list`` do.

As in yacs, a file or override may only set keys that exist, with a value of the key's type
(a list for a tuple and back; an int where a float is expected); command-line values are read
as Python literals (``APNET.LEVEL 1``, ``DATASETS.NAMES "('dukemtmc')"``) and otherwise kept as
strings. Any other key or type is a :class:`ConfigError` naming the key and what it expects, and
so is an ``APNET.AGENT`` that cannot run: an unknown agent, or APNet-S (``rga_s``, built for one
input size) with ``INPUT.SIZE_TEST`` other than ``INPUT.SIZE_TRAIN`` or with an input height whose
stage maps do not split into the level's stripes.

Keys added here (not in the original) are marked "ours" below.
"""

from __future__ import annotations

import argparse
import ast
import copy
from pathlib import Path

import yaml

from apnet.model import AGENTS, MAX_LEVEL, check_stripes
from common.runrecord import adopt_recorded_flags
from common.runtime import OptionError

__all__ = ["ConfigError", "DEFAULTS", "load_config"]


class ConfigError(OptionError):
    """A configuration file or override that cannot be used; the message names the key."""


DEFAULTS = {
    "MODEL": {
        "DEVICE": "cuda:0",
        "NAME": "seresnet50",
        "LAST_STRIDE": 1,
        "PRETRAIN_PATH": "",  # '' or the placeholder 'RESNET_PATH': the torch hub cache
        "PRETRAIN_PATH_SE": "",
        "PRETRAIN_PATH_DENSE": "",
        "STEM_RELU": False,  # ours: True adds torchvision's ReLU after the stem BN
        "PRETRAINED": True,  # ours: False starts from random weights instead of ImageNet's
        "AMP": False,  # ours: float16 mixed precision on CUDA
    },
    "APNET": {
        "LEVEL": 0,
        "MSMT": False,  # test feature = the classifier's logits (CHENGY12's MSMT17 setting)
        "ORDER": "fine_to_coarse",  # ours: "coarse_to_fine" is the paper's Figure 2
        "AGENT": "se",  # ours: "se" = the released APNet-C, "rga_s" = APNet-S (RGA-S on stripes)
    },
    "INPUT": {
        "SIZE_TRAIN": [384, 128],
        "SIZE_TEST": [384, 128],
        "PROB": 0.5,  # horizontal flip and random erasing
        "PIXEL_MEAN": [0.485, 0.456, 0.406],
        "PIXEL_STD": [0.229, 0.224, 0.225],
        "PADDING": 10,
    },
    "DATASETS": {
        "NAMES": "market1501",
        "ROOT_DIR": "./Datasets",  # ours: the original hard-codes ./Datasets
        "KEEP_DISTRACTORS": True,  # ours: False drops Market's pid 0 as Gutianpei's loader does
    },
    "DATALOADER": {
        "NUM_WORKERS": 8,
        "SAMPLER": "softmax",
        "NUM_INSTANCE": 16,
    },
    "SOLVER": {
        "OPTIMIZER_NAME": "Adam",
        "MAX_EPOCHS": 50,
        "BASE_LR": 3e-4,
        "BIAS_LR_FACTOR": 2,
        "MOMENTUM": 0.9,
        "MARGIN": 0.3,
        "SMOOTH": 0.1,
        "CLASSNUM": 0,  # ours: 0 = the training identities; the original fixed 751
        "CENTER_LR": 0.5,  # unused, as in the original
        "CENTER_LOSS_WEIGHT": 0.0005,  # unused, as in the original
        "WEIGHT_DECAY": 0.0005,
        "WEIGHT_DECAY_BIAS": 0.0,
        "GAMMA": 0.1,
        "STEPS": [30, 55],
        "WARMUP_FACTOR": 1.0 / 3,
        "WARMUP_ITERS": 500,
        "WARMUP_METHOD": "linear",
        "CHECKPOINT_PERIOD": 50,  # unused: a checkpoint is written every epoch, as in the original
        "LOG_PERIOD": 100,
        "EVAL_PERIOD": 50,
        "FINETUNE": False,
        "IMS_PER_BATCH": 64,
        "SEED": 1,  # ours: the original seeds 1 in tools/train.py
    },
    "TEST": {
        "IMS_PER_BATCH": 128,
        "RE_RANK": False,
        "WEIGHT": "",
        "EVAL_BEFORE_TRAINING": False,  # ours: evaluate the initial weights before epoch 1
    },
    "OUTPUT_DIR": "",
}


class Config(dict):
    """A nested dict whose keys read as attributes: ``cfg.SOLVER.BASE_LR``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def load_config(config_file=None, overrides=()):
    """Defaults, then ``config_file`` (YAML), then ``overrides`` (``[KEY, VALUE, ...]``)."""
    config = copy.deepcopy(DEFAULTS)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config_file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        for key, value in _flatten(loaded):
            _set(config, key, _decode(value), source=str(path))
    if len(overrides) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; {overrides[-1]!r} has no value")
    for key, value in zip(overrides[0::2], overrides[1::2]):
        _set(config, key, _decode(value), source="the command line")
    _check_agent(config)
    return _freeze(config)


def _check_agent(config):
    apnet, size = config["APNET"], config["INPUT"]["SIZE_TRAIN"]
    if apnet["AGENT"] not in AGENTS:
        raise ConfigError(f"APNET.AGENT {apnet['AGENT']!r}: use se (the released APNet-C) or "
                          f"rga_s (APNet-S, RGA-S on horizontal stripes)")
    if apnet["AGENT"] != "rga_s":
        return
    if list(config["INPUT"]["SIZE_TEST"]) != list(size):
        raise ConfigError(f"APNET.AGENT rga_s needs INPUT.SIZE_TEST = INPUT.SIZE_TRAIN (RGA-S is "
                          f"built for one number of positions), got {config['INPUT']['SIZE_TEST']} "
                          f"and {size}")
    if 0 <= apnet["LEVEL"] <= MAX_LEVEL:
        try:
            check_stripes(size, apnet["LEVEL"], config["MODEL"]["LAST_STRIDE"])
        except ValueError as err:
            raise ConfigError(f"INPUT.SIZE_TRAIN {size}: {err}") from None


def _flatten(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


# Keys that evaluating a run's weights needs and the weights do not show (written to run.json).
RECORDED_KEYS = ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST", "APNET.ORDER", "MODEL.STEM_RELU",
                 "MODEL.LAST_STRIDE", "APNET.MSMT")


def config_value(cfg, key):
    """``cfg["INPUT"]["SIZE_TEST"]`` for ``"INPUT.SIZE_TEST"``."""
    section, name = key.split(".")
    return cfg[section][name]


def with_recorded_keys(cfg, config_file, overrides, weights_path):
    """For ``--test`` and ``--resume``: :data:`RECORDED_KEYS` that the command line does not set
    are taken from the ``run.json`` beside ``weights_path`` (``TEST.WEIGHT``, or a file in the
    resumed ``OUTPUT_DIR``); one set differently is a :class:`ConfigError`. Returns the
    configuration to evaluate or continue with."""
    values = argparse.Namespace(**{key: config_value(cfg, key) for key in RECORDED_KEYS})
    adopted = adopt_recorded_flags(values, weights_path, set(overrides[0::2]), RECORDED_KEYS,
                                   spell=str, error=ConfigError)
    if not adopted:
        return cfg
    return load_config(config_file, [*overrides, *(item for pair in adopted.items()
                                                    for item in pair)])


def _decode(value):
    """yacs reads a string that is a Python literal as that literal: ``"('market1501')"`` is
    the string ``market1501``, ``"[384, 192]"`` a list."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _set(config, dotted_key, value, source):
    *parents, leaf = dotted_key.split(".")
    node = config
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: non-existent config key {dotted_key}")
    if leaf not in node or isinstance(node[leaf], dict):
        raise ConfigError(f"{source}: non-existent config key {dotted_key}")
    node[leaf] = _coerce(dotted_key, node[leaf], value, source)


def _coerce(key, default, value, source):
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{source}: {key} takes a value of type {type(default).__name__} "
                          f"(now {default!r}), got {value!r}")
    return value


def _freeze(config):
    return Config({key: _freeze(value) if isinstance(value, dict) else value
                   for key, value in config.items()})
