"""Write a trained network as files to deploy, each checked against PyTorch
(``../shared/specs/deploy.md`` §5).

    python -m bench.export METHOD [--checkpoint PATH] --out DIR [--size H W]
        [--model-option NAME=VALUE ...] [--device cuda]

``METHOD`` is one of lagnet, abdnet, iabnet, iaunet, apnet; ``--checkpoint`` a file written by the
method's ``main.py`` (or a released one), loaded strictly; without it the weights are fresh and
``deploy.json`` says so. ``--model-option`` gives the method's ``build_model`` arguments of a run
trained with other architecture flags or paper-vs-code switches than the README's (e.g. LAG-Net
``num_attentions=4 part_split=fixed``). ``DIR`` receives:

- ``model.pt2``: a ``torch.export`` program, batch 1 to 1024 (``torch.export.load(p).module()``);
  the lasting format, which AOTInductor and torch-tensorrt compile further;
- ``model_trace.pt``: a TorchScript trace (``torch.jit.load``; for libtorch C++, deprecated);
- ``deploy.json``: the method, the weights, the input (size, resize interpolation, RGB in [0, 1],
  ImageNet mean/std, which the files do not apply), the feature dimension, how the method's own
  evaluation uses the features (flip averaging, L2 normalisation, distance), torch and device,
  and each file's parity with eager.

Both files are loaded back and run at batch 1 and at a larger batch on seeded images; a file whose
features differ from eager's by more than 1e-3 of their scale is not written and the command
fails. Files are built for this torch version and device: build on the machine that runs them.
``python -m bench.extract`` reads such a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from bench.compile_speed import BACKENDS, parity
from bench.models import (BENCH_METHODS, BenchModelError, load_method_model, parse_model_options,
                          trained_settings)
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from common.files import atomic_write

__all__ = ["ARTIFACTS", "DEPLOY_FILE", "ExportError", "export_method"]

ARTIFACTS = {"model.pt2": "torch.export", "model_trace.pt": "torchscript trace"}
DEPLOY_FILE = "deploy.json"
PARITY_IMAGES = (1, 7)  # a batch of 1 and a larger one: the dynamic batch is exercised


class ExportError(RuntimeError):
    """An artifact that does not reproduce eager's features; the message names it."""


def export_method(name, out_dir, checkpoint=None, size=None, device="cpu", options=None):
    """Writes ``model.pt2``, ``model_trace.pt`` and ``deploy.json`` for method ``name`` (built
    with ``options``, see ``bench.models.load_method_model``) into ``out_dir``; returns the
    deploy record (the contents of ``deploy.json``)."""
    device = torch.device(device)
    method = BENCH_METHODS[name]
    size, options = trained_settings(name, checkpoint, size, options)
    model = load_method_model(name, checkpoint, options).to(device)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, *size, generator=generator).to(device) for n in PARITY_IMAGES]
    with torch.no_grad():
        reference = [model(images).float() for images in batches]
    if not all(torch.isfinite(features).all() for features in reference):
        raise ExportError(f"the {name} network produced non-finite (NaN or infinite) features "
                          f"with the weights {checkpoint or '(fresh)'}; nothing was written. "
                          f"Check the weights (a diverged run?)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "method": name,
        "weights": str(checkpoint) if checkpoint else "fresh (random): pass --checkpoint",
        "model_options": dict(options or {}),
        "input": {"height": size[0], "width": size[1],
                  "resize_interpolation": method.retrieval.interpolation,
                  "channels": "RGB", "scale": "pixel / 255", "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD), "normalized_inside_model": False},
        "feature_dim": int(reference[0].shape[1]),
        "retrieval": {"flip_average": method.retrieval.flip,
                      "l2_normalize": method.retrieval.normalize,
                      "distance": method.retrieval.distance},
        "torch": torch.__version__, "device": str(device), "files": {},
    }
    with tempfile.TemporaryDirectory(prefix=".export_", dir=out_dir) as staging:
        staging = Path(staging)
        for file_name, backend in ARTIFACTS.items():
            build = BACKENDS[backend][0]
            with torch.no_grad():
                loaded = build(model, batches[1][:2], device, staging)
                features = [loaded(images).float() for images in batches]
            check = parity(reference, features, torch.float32)
            if not check["passed"]:
                raise ExportError(f"{file_name} ({backend}) does not reproduce eager's features "
                                  f"(max difference {check['max_abs_diff_relative']:.2e} of "
                                  f"their scale, min cosine {check['min_cosine']:.5f}); "
                                  f"nothing was written for it")
            record["files"][file_name] = {"format": backend, "parity": check}
        for file_name in ARTIFACTS:  # only once every file passed
            os.replace(staging / file_name, out_dir / file_name)
    with atomic_write(out_dir / DEPLOY_FILE, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=list(BENCH_METHODS))
    parser.add_argument("--checkpoint", default=None,
                        help="weights written by the method's main.py (default: fresh weights)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the files")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size (default: the method's README size)")
    parser.add_argument("--model-option", nargs="*", default=[], metavar="NAME=VALUE",
                        help="build_model arguments of a run with non-README architecture flags")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        print(f"bench.export: warning: no --checkpoint, so the exported {args.method} network has "
              f"fresh (untrained) weights", file=sys.stderr)
    try:
        record = export_method(args.method, args.out, args.checkpoint, args.size, args.device,
                               parse_model_options(args.model_option))
    except (BenchModelError, ExportError) as err:
        sys.exit(f"bench.export: error: {err}")
    for file_name, entry in record["files"].items():
        print(f"{args.out / file_name}: {entry['format']}, max difference "
              f"{entry['parity']['max_abs_diff_relative']:.1e} of eager's scale, min cosine "
              f"{entry['parity']['min_cosine']:.6f}")
    retrieval = record["retrieval"]
    print(f"{args.out / DEPLOY_FILE}: {record['method']}, {record['input']['height']}x"
          f"{record['input']['width']} {record['input']['resize_interpolation']} resize, "
          f"ImageNet normalisation outside the model, {record['feature_dim']}-d features; "
          f"the method compares them with flip={retrieval['flip_average']}, "
          f"l2={retrieval['l2_normalize']}, {retrieval['distance']} distance")


if __name__ == "__main__":
    main()
