"""``run.json``: what evaluating a run's weights needs that the weights themselves do not show.

A training run writes it into its output folder (:func:`write_run_record`): the input size, the
resize interpolation, the architecture options that change only the forward pass, and the
command-line values they came from. Whoever evaluates or deploys a weights file of that folder
finds it (:func:`find_run_record`) and uses it (:func:`adopt_recorded_flags`): a value the user did
not give is taken from the record, and one given differently is refused with a one-line reason,
so a run trained at 64x32 is never silently evaluated, resumed or exported at 384x128, and a file
of another method's run is named as such (:func:`refuse_another_methods_file`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path

from common.checkpoint import CheckpointError
from common.files import atomic_write

__all__ = ["RUN_RECORD", "adopt_recorded_flags", "command_line_values", "explicit_flags",
           "find_run_record",
           "parse_command_line", "refuse_another_methods_file", "write_run_record"]

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"


def write_run_record(folder, method, input_size, interpolation, model_options=None, flags=None):
    """Writes ``folder/run.json``.

    Args:
        method: the method folder's name, e.g. "lagnet".
        input_size: (height, width) in pixels of training and test images.
        interpolation: the test resize, "bilinear" or "bicubic".
        model_options: ``build_model`` keyword arguments the weights do not reveal.
        flags: ``{command-line destination or config key: value}`` behind them.
    """
    record = {"method": method, "input_size": [int(v) for v in input_size],
              "interpolation": interpolation, "model_options": dict(model_options or {}),
              "flags": {name: _plain(value) for name, value in (flags or {}).items()}}
    with atomic_write(Path(folder) / RUN_RECORD, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    return record


def find_run_record(weights_path):
    """``(path, record)`` of the ``run.json`` beside a weights file or one folder above it (LAG-Net
    keeps weights in ``model/``); ``(None, None)`` when there is none."""
    if weights_path is None:
        return None, None
    weights_path = Path(weights_path)
    for folder in (weights_path.parent, weights_path.parent.parent):
        path = folder / RUN_RECORD
        if path.is_file():
            try:
                return path, json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                log.warning(f"{path} is not readable JSON; it is ignored")
                return None, None
    return None, None


def refuse_another_methods_file(weights_path, method, fix):
    """Refuses a weights file whose ``run.json`` says another method's run wrote it, before its
    keys are compared (which would list hundreds of them).

    Args:
        weights_path: the file to load (None: nothing to check).
        method: the method folder's name of the caller, e.g. "abdnet".
        fix: what to do instead, with ``{method}`` standing for the recorded method, e.g.
            ``"evaluate it with {method}/main.py"``.

    Raises:
        CheckpointError: naming the file, the recorded method and ``fix``.
    """
    record_path, record = find_run_record(weights_path)
    recorded = (record or {}).get("method")
    if recorded not in (None, method):
        raise CheckpointError(f"{weights_path} was written by a {recorded} run ({record_path}), "
                              f"not {method}; {fix.format(method=recorded)}")


def parse_command_line(parser, argv=None):
    """``parser.parse_args(argv)`` plus ``args.explicit``: the destinations given on the command
    line, which a run record may not override (:func:`adopt_recorded_flags`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.explicit = explicit_flags(parser, argv)
    return args


def command_line_values(args):
    """``{destination: value}`` of parsed ``args``, without the ``explicit`` set that
    :func:`parse_command_line` adds (for logs and config files)."""
    return {name: value for name, value in vars(args).items() if name != "explicit"}


def explicit_flags(parser, argv):
    """The destinations of the options given on the command line ``argv`` (not defaulted)."""
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(shadow.parse_known_args(argv)[0]))


def adopt_recorded_flags(target, weights_path, explicit, names, spell, error):
    """Takes the recorded values of ``names`` for what the user did not set.

    Args:
        target: the object holding the values (argparse namespace), set with ``setattr``.
        weights_path: the weights file to be evaluated or resumed from.
        explicit: names the user gave explicitly (:func:`explicit_flags`).
        names: the recorded names to consider.
        spell: name -> how the user writes it (e.g. ``"--height"``), for messages.
        error: the exception class to raise for a conflict.

    Returns:
        ``{name: value}`` adopted from the record (empty without a record).
    """
    record_path, record = find_run_record(weights_path)
    if record is None:
        return {}
    adopted = {}
    for name in names:
        if name not in record["flags"]:
            continue
        recorded, current = record["flags"][name], _plain(getattr(target, name))
        if name in explicit and current != recorded:
            if isinstance(recorded, bool):  # a switch: given, but the run was trained without it
                raise error(f"{spell(name)} but {weights_path} was trained without it "
                            f"({record_path}); drop {spell(name)}")
            raise error(f"{spell(name)} {current} but {weights_path} was trained with "
                        f"{recorded} ({record_path}); drop {spell(name)} to use it, or pass "
                        f"{recorded}")
        if current != recorded:
            setattr(target, name, recorded)
            adopted[name] = recorded
    if adopted:
        log.info(f"from {record_path}: " + ", ".join(f"{spell(k)} {v}" for k, v in adopted.items()))
    return adopted


def _plain(value):
    """JSON-comparable: tuples become lists."""
    return list(value) if isinstance(value, tuple) else value
