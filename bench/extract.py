"""Re-ID features of a folder of person crops, made as the method's own evaluation makes them.

    python -m bench.extract IMAGES --exported DIR [--file NAME] [--threads N] --out features.npz
    python -m bench.extract IMAGES --method METHOD [--checkpoint PATH]
        [--model-option NAME=VALUE ...] --out features.npz

``IMAGES`` is a folder (searched recursively) or one image file; no identities or cameras are
needed. The network is a folder written by ``python -m bench.export``, run with whichever format
it holds (OpenVINO, ONNX Runtime, ``torch.export``, TorchScript; ``--file model_int8.xml`` for
an INT8 file), or a method's network in PyTorch with a checkpoint from its ``main.py``. Each
image is resized to the method's input size with its interpolation, normalised with the ImageNet
statistics, and its feature is flip-averaged and L2-normalised exactly when the method's
evaluation does so (``bench.models.Retrieval``; ``--flip``/``--no-flip`` overrides). The batch
size defaults to the one that suits the runtime (:data:`CPU_BATCH`).

``features.npz`` holds ``features`` (N x D float32), ``paths`` (the images, in the order of the
rows), ``method`` and ``distance`` (the metric the method ranks with). ``python -m bench.search
--gallery G.npz --query Q.npz`` ranks one file's crops for each crop of another; to compare the
first crop with all the others (smaller = more alike)::

    data = np.load("features.npz")
    dist = common.eval.compute_distance_matrix(data["features"][:1], data["features"][1:],
                                               metric=str(data["distance"]))
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.export import DEPLOY_FILE, load_file
from bench.runtimes import Unavailable
from bench.models import (BENCH_METHODS, BenchModelError, Retrieval, load_for_inference,
                          parse_model_options)
from common.data.dataset import IMAGE_EXTENSIONS, DatasetError, Sample, list_images
from common.data.images import ImageDataset
from common.data.transforms import build_test_transform
from common.eval import NonFiniteFeaturesError, extract_features
from common.files import atomic_write
from common.runtime import user_error_message

__all__ = ["CPU_BATCH", "ExtractError", "Extractor", "extract_folder", "extract_samples",
           "load_eager", "load_exported", "suited_batch_size"]


class ExtractError(ValueError):
    """Inputs that cannot be extracted; the message names the problem and the fix."""


@dataclass
class Extractor:
    """A network (images -> features) with its input size and its method's retrieval
    convention."""

    network: Callable
    method: str
    height: int
    width: int
    retrieval: Retrieval
    runtime: str = "eager"  # "eager" or the runtime of a bench.export file


# the FP32 file an --exported folder runs when --file does not say: the fastest on a CPU first
PREFERENCE = ("model.xml", "model.onnx", "model.pt2", "model_trace.pt")
# images per call that suit each runtime on a CPU (bench/results/deploy_cpu_*.json): eager
# PyTorch (and its pt2/TorchScript files) runs APNet slower per image at batch 32 than at 1,
# ONNX Runtime and OpenVINO are flat, so they take big batches; on a GPU every runtime takes 32
CPU_BATCH = {"torch.export": 1, "torchscript trace": 1, "eager": 1, "onnxruntime": 32,
             "openvino": 32}
GPU_BATCH = 32


def load_exported(folder, device="cpu", file=None, threads=None):
    """A file of a ``bench.export`` folder with the settings of its ``deploy.json``: ``file``
    (a name listed there, e.g. ``model_int8.xml``), else the first FP32 file of
    :data:`PREFERENCE` present. ``threads`` caps ONNX Runtime's / OpenVINO's CPU threads.

    Raises:
        ExtractError: not an export folder, a file it does not list, a device it was not built
            for, or a runtime that is not installed.
    """
    folder = Path(folder)
    deploy_path = folder / DEPLOY_FILE
    if not deploy_path.is_file():
        raise ExtractError(f"{folder} is not a folder written by bench.export (it needs "
                           f"{DEPLOY_FILE}); run python -m bench.export METHOD "
                           f"--checkpoint PATH --out {folder}")
    deploy = json.loads(deploy_path.read_text())
    present = [name for name in deploy["files"] if (folder / name).is_file()]
    if file is None:
        file = next((name for name in PREFERENCE if name in present), None)
    if file not in present:
        raise ExtractError(f"{folder} has no file {file!r} of bench.export (it has "
                           f"{', '.join(present) or 'none'}); pass --file with one of them, or "
                           f"export again with --format")
    entry = deploy["files"][file]
    if entry["runtime"] in ("onnxruntime", "openvino") and torch.device(device).type != "cpu":
        raise ExtractError(f"{file} runs on the CPU here ({entry['runtime']}); pass --device cpu")
    if torch.device(deploy["device"]).type != torch.device(device).type:
        raise ExtractError(f"{folder / file} was exported on {deploy['device']}, not {device}: "
                           f"pass --device {deploy['device']}, or export again on {device}")
    try:
        network = load_file(folder / file, entry, threads)
    except Unavailable as err:
        raise ExtractError(f"{file}: {err}") from None
    retrieval, image = deploy["retrieval"], deploy["input"]
    return Extractor(network, deploy["method"], image["height"], image["width"],
                     Retrieval(image["resize_interpolation"], retrieval["flip_average"],
                               retrieval["l2_normalize"], retrieval["distance"]),
                     entry["runtime"])


def suited_batch_size(extractor, device="cpu"):
    """The images per call that suit ``extractor``'s runtime on ``device`` (:data:`CPU_BATCH`)."""
    return GPU_BATCH if torch.device(device).type == "cuda" else CPU_BATCH[extractor.runtime]


def load_eager(method, checkpoint=None, size=None, device="cpu", options=None):
    """Method ``method``'s network in PyTorch (fresh weights or ``checkpoint``'s), built with
    ``options`` (``bench.models.load_method_model``)."""
    network, (height, width), _ = load_for_inference(method, checkpoint, size, options, device)
    return Extractor(network, method, height, width, BENCH_METHODS[method].retrieval)


def image_paths(source):
    """The images to extract: ``source`` itself, or every image below the folder ``source``."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ExtractError(f"{source} does not exist; pass a folder of crops or an image file")
    paths = list_images(source, recursive=True)
    if not paths:
        raise ExtractError(f"{source} holds no image (looked for {', '.join(IMAGE_EXTENSIONS)} "
                           f"files, recursively)")
    return paths


def extract_folder(extractor, source, batch_size=32, device="cpu", workers=0, progress=True):
    """``(features, paths)``: one float32 row per image under ``source``."""
    paths = image_paths(source)
    features = extract_samples(extractor, [Sample(str(p), -1, -1) for p in paths], batch_size,
                               device, workers, progress)
    return features, [str(p) for p in paths]


def extract_samples(extractor, samples, batch_size=32, device="cpu", workers=0, progress=True):
    """(N, D) float32 features of the :class:`~common.data.Sample` list ``samples``, in its
    order, made as the method's evaluation makes them (size, interpolation, flip, L2)."""
    retrieval = extractor.retrieval
    dataset = ImageDataset(list(samples), build_test_transform(extractor.height, extractor.width,
                                                               retrieval.interpolation))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    features, _, _ = extract_features(extractor.network, loader, device=device,
                                      flip=retrieval.flip, normalize=retrieval.normalize,
                                      progress=progress, desc="images")
    return features.numpy().astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.extract",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("images", help="a folder of crops (recursive) or one image")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--exported", type=Path, help="a folder written by bench.export")
    source.add_argument("--method", choices=list(BENCH_METHODS), help="the network in PyTorch")
    parser.add_argument("--checkpoint", default=None,
                        help="with --method: weights written by its main.py (default: fresh)")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="with --method: input size (default: the method's README size)")
    parser.add_argument("--model-option", nargs="*", default=[], metavar="NAME=VALUE",
                        help="with --method: build_model arguments of a run with non-README "
                             "architecture flags")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="flip-average the features (default: as the method evaluates)")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--file", default=None,
                        help="with --exported: the file to run, e.g. model_int8.xml (default: "
                             "the first FP32 file of model.xml, model.onnx, model.pt2, "
                             "model_trace.pt)")
    parser.add_argument("--threads", type=int, default=None,
                        help="with --exported onnx/openvino files: CPU threads (default: the "
                             "runtime's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per call (default: the one that suits the runtime: 1 for "
                             "PyTorch on a CPU, 32 for ONNX Runtime, OpenVINO and GPUs)")
    parser.add_argument("--workers", type=int, default=2, help="image-loading processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.method and args.checkpoint is None:
        print(f"bench.extract: warning: no --checkpoint, so these are features of a fresh "
              f"(untrained) {args.method} network", file=sys.stderr)
    if args.method and (args.file or args.threads):
        parser.error("--file and --threads go with --exported")
    if args.exported and (args.checkpoint or args.size or args.model_option):
        parser.error("--checkpoint, --size and --model-option go with --method; an --exported "
                     "folder has its own")
    try:
        extractor = (load_exported(args.exported, args.device, args.file, args.threads)
                     if args.exported else
                     load_eager(args.method, args.checkpoint, args.size, args.device,
                                parse_model_options(args.model_option)))
        if args.flip is not None:
            extractor.retrieval = replace(extractor.retrieval, flip=args.flip)
        batch_size = args.batch_size or suited_batch_size(extractor, args.device)
        start = time.perf_counter()
        features, paths = extract_folder(extractor, args.images, batch_size, args.device,
                                         args.workers)
    except (BenchModelError, DatasetError, ExtractError) as err:
        sys.exit(f"bench.extract: error: {user_error_message(err)}")
    except NonFiniteFeaturesError as err:
        weights = args.exported or args.checkpoint or "fresh weights"
        sys.exit(f"bench.extract: error: {err} (weights: {weights}); nothing was written")
    seconds = time.perf_counter() - start
    retrieval = extractor.retrieval
    with atomic_write(args.out) as handle:
        np.savez(handle, features=features, paths=np.array(paths), method=extractor.method,
                 distance=retrieval.distance)
    print(f"{args.out}: {features.shape[0]} images x {features.shape[1]}-d {extractor.method} "
          f"features (flip {'on' if retrieval.flip else 'off'}, L2 "
          f"{'on' if retrieval.normalize else 'off'}; rank with the {retrieval.distance} "
          f"distance), {features.shape[0] / seconds:.1f} images/s on {args.device} with "
          f"{extractor.runtime}, batch {batch_size}")


if __name__ == "__main__":
    main()
