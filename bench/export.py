"""Write a trained network as files to deploy, each checked against PyTorch before it is kept
(``../shared/specs/deploy.md`` §5).

    python -m bench.export METHOD [--checkpoint PATH] --out DIR
        [--format {pt2,torchscript,onnx,openvino} ...] [--int8 --calibration DIR
        --evaluation DIR [--int8-tolerance POINTS]] [--size H W]
        [--model-option NAME=VALUE ...] [--device cuda]

``METHOD`` is one of lagnet, abdnet, iabnet, iaunet, apnet; ``--checkpoint`` a file written by the
method's ``main.py`` (or a released one), loaded strictly; without it the weights are fresh and
``deploy.json`` says so. ``--model-option`` gives the method's ``build_model`` arguments of a run
trained with other architecture flags or paper-vs-code switches than the README's (e.g. LAG-Net
``num_attentions=4 part_split=fixed``). ``--format`` (default: pt2 torchscript) chooses the files:

- ``pt2`` -> ``model.pt2``: a ``torch.export`` program (``torch.export.load(p).module()``); the
  lasting PyTorch format, which AOTInductor and torch-tensorrt compile further;
- ``torchscript`` -> ``model_trace.pt``: a TorchScript trace (``torch.jit.load``; for libtorch
  C++, deprecated);
- ``onnx`` -> ``model.onnx``: ONNX opset 18 (one file), for ONNX Runtime (needs the ``deploy``
  extra: ``pip install -e '.[deploy]'``);
- ``openvino`` -> ``model.xml`` + ``model.bin``: OpenVINO IR with FP32 weights, run with an
  explicit f32 inference precision (OpenVINO's CPU default is bf16 where the CPU has it).

Every file takes a float32 (B, 3, H, W) batch of normalised images, B dynamic (1 to 1024), and
returns (B, D) features. Each is loaded back and run at batch 1 and 7 (seeded images: the query
and gallery of the top-10 check); one whose features differ from eager's by more than 1e-3 of
their scale is not written and the command fails.

``--int8`` adds a post-training INT8 quantization of each ONNX (ONNX Runtime static QDQ ->
``model_int8.onnx``) and OpenVINO (NNCF -> ``model_int8.xml``) file, calibrated on up to 64
images of ``--calibration DIR`` (drawn with a fixed seed). An INT8 file is kept only when its
rank-1 and mAP on ``--evaluation DIR`` (a Market-1501 layout with ``query/`` and
``bounding_box_test/``, or CUHK01's ``campus/``, whose test set is then 100 identities drawn by
``load_cuhk01``'s seeded split 0, not the 100 highest numbers) are within ``--int8-tolerance``
points (default 1) of its FP32 file's; both are printed. Use calibration images of other
identities than the evaluation's, and weights not trained on the evaluation's identities.

``deploy.json`` records the method, the weights, the input (size, resize interpolation, RGB in
[0, 1], ImageNet mean/std, which the files do not apply), the feature dimension, how the
method's own evaluation uses the features (flip averaging, L2 normalisation, distance), torch,
the runtimes' versions and device, and for each file its format, opset, precision, calibration
set, parity with eager and (INT8) the accuracy gate. Files are built for these versions and this
device: build on the machine that runs them. ``python -m bench.extract`` reads such a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench import runtimes
from bench.models import BENCH_METHODS, BenchModelError, load_for_inference, parse_model_options
from bench.parity import parity
from common.data.dataset import DatasetError, Sample, list_images
from common.data.datasets import load_cuhk01, load_market1501
from common.data.images import ImageDataset
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform
from common.eval import evaluate_features, extract_features
from common.files import atomic_write
from common.runtime import user_error_message

__all__ = ["DEPLOY_FILE", "FORMATS", "INT8_FILES", "ExportError", "accuracy", "calibration_images",
           "export_method", "load_file"]

DEPLOY_FILE = "deploy.json"
PARITY_IMAGES = (1, 7)  # a batch of 1 (the query) and a larger one (the gallery): dynamic batch
CALIBRATION_IMAGES = 64
INT8_TOLERANCE = 1.0  # points of rank-1 and of mAP (in %) an INT8 file may lose to FP32
CUHK01_TEST_IDS = 100
OPENVINO_PRECISION = "f32"


class ExportError(RuntimeError):
    """A file that does not reproduce eager's features (or, INT8, its accuracy); the message
    names it."""


def _write_pt2(model, example, folder):
    batch = torch.export.Dim("batch", min=1, max=runtimes.MAX_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "model.pt2")


def _write_trace(model, example, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), folder / "model_trace.pt")


def _write_onnx(model, example, folder):
    runtimes.export_onnx(model, example, folder / "model.onnx")


def _write_openvino(model, example, folder):
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists():  # with --format onnx openvino the ONNX file is shared
        runtimes.export_onnx(model, example, folder / "openvino_source.onnx")
        onnx_path = folder / "openvino_source.onnx"
    runtimes.onnx_to_openvino(onnx_path, folder / "model.xml")


# format -> (main file, every file it writes, writer, what deploy.json says about it)
FORMATS = {
    "pt2": ("model.pt2", ("model.pt2",), _write_pt2, {"runtime": "torch.export"}),
    "torchscript": ("model_trace.pt", ("model_trace.pt",), _write_trace,
                    {"runtime": "torchscript trace"}),
    "onnx": ("model.onnx", ("model.onnx",), _write_onnx,
             {"runtime": "onnxruntime", "opset": runtimes.ONNX_OPSET}),
    "openvino": ("model.xml", ("model.xml", "model.bin"), _write_openvino,
                 {"runtime": "openvino", "opset": runtimes.ONNX_OPSET,
                  "inference_precision_hint": OPENVINO_PRECISION}),
}
# FP32 file -> (INT8 file, every file it writes, quantizer, tool)
INT8_FILES = {
    "model.onnx": ("model_int8.onnx", ("model_int8.onnx",), runtimes.quantize_onnx,
                   "onnxruntime.quantization static QDQ, per-channel, min-max"),
    "model.xml": ("model_int8.xml", ("model_int8.xml", "model_int8.bin"),
                  runtimes.quantize_openvino, "nncf.quantize, mixed preset"),
}


def load_file(path, entry, threads=None):
    """The file ``path`` described by its ``deploy.json`` entry as a function images ->
    features, (B, 3, H, W) float32 -> (B, D) float32 CPU tensors; ``threads`` (ONNX Runtime and
    OpenVINO) caps the CPU threads. Raises ``runtimes.Unavailable`` without the runtime."""
    runtime = entry["runtime"]
    if runtime == "torch.export":
        module = torch.export.load(path).module()
        return lambda images: module(images)  # a function: an exported module refuses .eval()
    if runtime == "torchscript trace":
        return torch.jit.load(path, map_location="cpu")
    if runtime == "onnxruntime":
        return runtimes.onnxruntime_runner(path, threads)
    return runtimes.openvino_runner(path, entry["inference_precision_hint"], threads)


def _run(network, batches):
    with torch.no_grad():
        return [network(images).float().cpu() for images in batches]


def calibration_images(folder, size, interpolation):
    """Up to 64 images of ``folder`` (recursive, a seeded draw), resized to ``size`` (H, W) with
    ``interpolation`` and normalised, as a list of (1, 3, H, W) float32 tensors; an
    :class:`ExportError` when it holds none."""
    paths = list_images(folder, recursive=True) if Path(folder).is_dir() else []
    if not paths:
        raise ExportError(f"--calibration {folder} holds no image; pass a folder of person "
                          f"crops (e.g. ../shared/data/market1501_mini/bounding_box_train)")
    paths = sorted(random.Random(0).sample(paths, min(CALIBRATION_IMAGES, len(paths))))
    transform = build_test_transform(*size, interpolation)
    dataset = ImageDataset([Sample(str(p), -1, -1) for p in paths], transform)
    return [dataset[i][0].unsqueeze(0) for i in range(len(dataset))]


def _evaluation_set(folder):
    """(query, gallery) samples of a Market-1501 layout or of CUHK01 (the 100 test identities of
    ``load_cuhk01`` split 0 with all other identities as its train set: a seeded draw)."""
    folder = Path(folder)
    try:
        if (folder / "query").is_dir():
            data = load_market1501(folder)
        else:
            campus = folder / "campus" if (folder / "campus").is_dir() else folder
            num_ids = len({p.name[:4] for p in list_images(campus)}) if campus.is_dir() else 0
            data = load_cuhk01(folder, num_train_ids=max(1, num_ids - CUHK01_TEST_IDS))
    except DatasetError as err:
        raise ExportError(f"--evaluation {folder}: {err} (give a Market-1501 layout with query/ "
                          f"and bounding_box_test/, or CUHK01's campus/)") from None
    return data.query, data.gallery


def accuracy(network, query, gallery, size, retrieval):
    """``{"rank1": %, "mAP": %}`` of ``network`` (images -> features) on the samples, with the
    method's resize, flip averaging, L2 normalisation and distance."""
    transform = build_test_transform(*size, retrieval.interpolation)
    features = []
    for samples in (query, gallery):
        loader = DataLoader(ImageDataset(samples, transform), batch_size=32, shuffle=False)
        features.append(extract_features(network, loader, flip=retrieval.flip,
                                         normalize=retrieval.normalize, progress=False))
    (qf, qp, qc), (gf, gp, gc) = features
    result = evaluate_features(qf, gf, qp, gp, qc, gc, metric=retrieval.distance)
    return {"rank1": 100 * float(result["cmc"][0]), "mAP": 100 * float(result["mAP"])}


def _check(name, file_name, reference, features):
    check = parity(reference, features, torch.float32)
    if not check["passed"]:
        raise ExportError(f"{file_name} does not reproduce eager's features of {name} (max "
                          f"difference {check['max_abs_diff_relative']:.2e} of their scale, min "
                          f"cosine {check['min_cosine']:.5f}); nothing was written for it")
    return check


def export_method(name, out_dir, checkpoint=None, size=None, device="cpu", options=None,
                  formats=("pt2", "torchscript"), calibration=None, evaluation=None,
                  int8_tolerance=INT8_TOLERANCE, log=None):
    """Writes the ``formats`` files (keys of :data:`FORMATS`) and ``deploy.json`` for method
    ``name`` (built with ``options``, see ``bench.models.load_method_model``) into ``out_dir``;
    returns the deploy record (the contents of ``deploy.json``).

    With ``calibration`` (a folder of images) the ONNX and OpenVINO files also get INT8 versions,
    kept only when their rank-1 and mAP on ``evaluation`` (a Market-1501 or CUHK01 folder) are
    within ``int8_tolerance`` points of the FP32 file's. ``log`` (a function of one string)
    receives the accuracy numbers as they are measured.

    Raises:
        ExportError: a file that fails its check (nothing of it is written), a missing
            calibration or evaluation folder, ONNX/OpenVINO formats off the CPU.
        runtimes.Unavailable: ONNX or OpenVINO without the deploy extra.
        BenchModelError: weights that do not load.
    """
    device = torch.device(device)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if device.type != "cpu" and {"onnx", "openvino"} & set(formats):
        raise ExportError("the onnx and openvino files are built and checked on the CPU; pass "
                          "--device cpu")
    if calibration is not None and not {"onnx", "openvino"} & set(formats):
        raise ExportError("--int8 quantizes the onnx and openvino files; add --format onnx "
                          "and/or openvino")
    if calibration is not None and evaluation is None:
        raise ExportError("--int8 needs --evaluation DIR (real query/gallery images) for its "
                          "accuracy gate, e.g. ../shared/data/market1501_mini")
    method = BENCH_METHODS[name]
    model, size, options = load_for_inference(name, checkpoint, size, options, device)
    int8_inputs = None
    if calibration is not None:
        int8_inputs = (calibration_images(calibration, size, method.retrieval.interpolation),
                       _evaluation_set(evaluation))
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, *size, generator=generator).to(device) for n in PARITY_IMAGES]
    reference = _run(model, batches)
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
                  "std": list(IMAGENET_STD), "normalized_inside_model": False,
                  "batch": f"dynamic, 1 to {runtimes.MAX_BATCH}"},
        "feature_dim": int(reference[0].shape[1]),
        "retrieval": {"flip_average": method.retrieval.flip,
                      "l2_normalize": method.retrieval.normalize,
                      "distance": method.retrieval.distance},
        "torch": torch.__version__, "versions": runtimes.versions(), "device": str(device),
        "files": {},
    }
    keep = []
    with tempfile.TemporaryDirectory(prefix=".export_", dir=out_dir) as staging:
        staging = Path(staging)
        for fmt in formats:
            file_name, written, write, about = FORMATS[fmt]
            with torch.no_grad():
                write(model, batches[1][:2], staging)
            entry = {"format": fmt, **about, "precision": "fp32", "calibration": None}
            features = _run(load_file(staging / file_name, entry), batches)
            entry["parity"] = _check(name, file_name, reference, features)
            record["files"][file_name] = entry
            keep += written
            if int8_inputs is not None and file_name in INT8_FILES:
                keep += _quantize(name, staging, file_name, entry, int8_inputs, size, method,
                                  reference, batches, calibration, evaluation, int8_tolerance,
                                  record, log or (lambda line: None))
        for file_name in keep:  # only once every file passed
            os.replace(staging / file_name, out_dir / file_name)
    with atomic_write(out_dir / DEPLOY_FILE, "w") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    return record


def _quantize(name, staging, file_name, entry, int8_inputs, size, method, reference, batches,
              calibration, evaluation, tolerance, record, log):
    """Writes the INT8 version of ``file_name``, gates it on accuracy, records it; returns the
    files to keep."""
    images, (query, gallery) = int8_inputs
    int8_name, written, quantize, tool = INT8_FILES[file_name]
    quantize(staging / file_name, images, staging / int8_name)
    int8_entry = {**entry, "precision": "int8", "quantization": tool,
                  "calibration": {"folder": str(calibration), "images": len(images),
                                  "draw": "seeded (random.Random(0)), up to 64"}}
    network = load_file(staging / int8_name, int8_entry)
    int8_entry["parity"] = parity(reference, _run(network, batches), torch.int8)
    fp32 = accuracy(load_file(staging / file_name, entry), query, gallery, size, method.retrieval)
    int8 = accuracy(network, query, gallery, size, method.retrieval)
    passed = all(fp32[k] - int8[k] <= tolerance for k in ("rank1", "mAP"))
    int8_entry["accuracy_gate"] = {
        "evaluation": str(evaluation), "query": len(query), "gallery": len(gallery),
        "fp32": fp32, "int8": int8, "tolerance_points": tolerance, "passed": passed}
    log(f"{int8_name} ({name}): rank-1 {int8['rank1']:.2f}% (FP32 {fp32['rank1']:.2f}%), mAP "
        f"{int8['mAP']:.2f}% (FP32 {fp32['mAP']:.2f}%) on {len(query)} query / {len(gallery)} "
        f"gallery images of {evaluation}: {'kept' if passed else 'NOT kept'} (tolerance "
        f"{tolerance} points)")
    if not passed:
        record["rejected_int8"] = {**record.get("rejected_int8", {}), int8_name: int8_entry}
        return []
    record["files"][int8_name] = int8_entry
    return list(written)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=list(BENCH_METHODS))
    parser.add_argument("--checkpoint", default=None,
                        help="weights written by the method's main.py (default: fresh weights)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the files")
    parser.add_argument("--format", nargs="+", default=["pt2", "torchscript"],
                        choices=list(FORMATS), help="the files to write (default: pt2 torchscript)")
    parser.add_argument("--int8", action="store_true",
                        help="also INT8 versions of the onnx/openvino files (needs --calibration "
                             "and --evaluation)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="with --int8: a folder of person crops to calibrate on")
    parser.add_argument("--evaluation", type=Path, default=None,
                        help="with --int8: a Market-1501 (query/, bounding_box_test/) or CUHK01 "
                             "folder for the accuracy gate")
    parser.add_argument("--int8-tolerance", type=float, default=INT8_TOLERANCE,
                        help="points of rank-1 and mAP an INT8 file may lose (default: 1)")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size (default: the method's README size)")
    parser.add_argument("--model-option", nargs="*", default=[], metavar="NAME=VALUE",
                        help="build_model arguments of a run with non-README architecture flags")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.int8 and args.calibration is None:
        parser.error("--int8 needs --calibration DIR (person crops) and --evaluation DIR")
    if not args.int8 and (args.calibration or args.evaluation):
        parser.error("--calibration and --evaluation go with --int8")
    if args.checkpoint is None:
        print(f"bench.export: warning: no --checkpoint, so the exported {args.method} network has "
              f"fresh (untrained) weights", file=sys.stderr)
    try:
        record = export_method(args.method, args.out, args.checkpoint, args.size, args.device,
                               parse_model_options(args.model_option), args.format,
                               args.calibration if args.int8 else None, args.evaluation,
                               args.int8_tolerance, log=print)
    except (BenchModelError, ExportError, runtimes.Unavailable) as err:
        sys.exit(f"bench.export: error: {user_error_message(err)}")
    for file_name, entry in record["files"].items():
        print(f"{args.out / file_name}: {entry['format']} {entry['precision']}, max difference "
              f"{entry['parity']['max_abs_diff_relative']:.1e} of eager's scale, min cosine "
              f"{entry['parity']['min_cosine']:.6f}, top-10 agreement "
              f"{entry['parity']['top10_agreement']:.2f}")
    retrieval = record["retrieval"]
    print(f"{args.out / DEPLOY_FILE}: {record['method']}, {record['input']['height']}x"
          f"{record['input']['width']} {record['input']['resize_interpolation']} resize, "
          f"ImageNet normalisation outside the model, {record['feature_dim']}-d features; "
          f"the method compares them with flip={retrieval['flip_average']}, "
          f"l2={retrieval['l2_normalize']}, {retrieval['distance']} distance")
    if record.get("rejected_int8"):
        sys.exit(f"bench.export: error: {', '.join(record['rejected_int8'])} lost more than "
                 f"{args.int8_tolerance} points of rank-1 or mAP to FP32 and were not written "
                 f"(the FP32 files were); see {args.out / DEPLOY_FILE}")


if __name__ == "__main__":
    main()
