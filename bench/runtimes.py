"""ONNX, ONNX Runtime and OpenVINO for ``bench/`` (``../shared/specs/deploy.md`` §5-6): writing a
network as ONNX or OpenVINO IR, quantizing it to INT8, and running the files on the CPU.

These libraries come with the optional ``deploy`` extra (``pip install -e '.[deploy]'``); without
it each function raises :class:`Unavailable`, whose message says so. Every runner takes a float32
(B, 3, H, W) CPU tensor of normalised images (any B: the files have a dynamic batch) and returns
the (B, D) float32 features as a tensor.

Precision is explicit: OpenVINO's CPU plugin runs an FP32 IR in bfloat16 by default on a CPU with
AVX512-BF16 (6e-3 relative difference to eager measured here), so :func:`openvino_runner` always
sets ``INFERENCE_PRECISION_HINT`` (``"f32"`` unless asked otherwise) and IR files are saved
without FP16 weight compression.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import warnings

import numpy as np
import torch

__all__ = ["DEPLOY_EXTRA", "ONNX_OPSET", "Unavailable", "export_onnx", "onnx_to_openvino",
           "onnxruntime_runner", "openvino_runner", "quantize_onnx", "quantize_openvino",
           "require", "versions"]

DEPLOY_EXTRA = "pip install -e '.[deploy]'"
ONNX_OPSET = 18
MAX_BATCH = 1024


class Unavailable(Exception):
    """The backend cannot run here; the message says why."""


def require(module):
    """``importlib.import_module(module)``, or :class:`Unavailable` naming the deploy extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"{module} not importable ({err}); install the deploy extra: "
                          f"{DEPLOY_EXTRA}") from None


def versions():
    """``{"onnx": ..., "onnxruntime": ..., "openvino": ..., "nncf": ...}``, None where absent."""
    found = {}
    for name in ("onnx", "onnxruntime", "openvino", "nncf"):
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:
            found[name] = None
    return found


def export_onnx(model, example, path):
    """Writes the eval-mode ``model`` to ``path`` as one ONNX file (opset :data:`ONNX_OPSET`,
    through ``torch.export``): input ``images`` (B, 3, H, W), output ``features`` (B, D), B dynamic
    (1 to 1024). ``example`` is a (B >= 2, 3, H, W) batch of the deployed size."""
    require("onnx")
    require("onnxscript")
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # the exporter prints its progress and warns about TorchScript-era options; neither helps here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["images"],
                          output_names=["features"], dynamic_shapes=({0: batch},),
                          opset_version=ONNX_OPSET, dynamo=True, external_data=False,
                          verbose=False)


def onnxruntime_runner(path, threads=None):
    """An ONNX Runtime CPU session of ``path`` as a function images -> features; ``threads``
    sets its intra-op threads (None: ONNX Runtime's default, one per physical core)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: torch.from_numpy(
        session.run(None, {"images": np.ascontiguousarray(images.cpu().numpy())})[0])


def onnx_to_openvino(onnx_path, xml_path):
    """Converts ``onnx_path`` to OpenVINO IR ``xml_path`` (and its ``.bin``), weights in FP32.

    The ONNX file is read with ``Core.read_model`` (OpenVINO's ONNX frontend, op for op), not
    ``openvino.convert_model``: the latter's offline transformations fuse IAUnet's channel
    interaction, softmax(G Gᵀ) G with G the (B, C, H W) view of a (B, C, H, W) map, into a
    ``ScaledDotProductAttention`` and then drop the reshapes around it, leaving an SDPA on the
    4-D map, i.e. attention among the H rows of each channel's H x W map: another function
    (OpenVINO 2026.4.1, IAUnet's IAU3 block: 0.4-0.7 of the features' scale once the block's
    zero-initialised output BatchNorms have moved, as training moves them; the likely cause of
    the 3e-3 seen after one epoch). The CPU
    plugin applies its own fusions when it compiles the IR; on IAUnet that gives eager's features
    (1.5e-6 of their scale at 256x128)."""
    ov = require("openvino")
    model = openvino_core().read_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


@functools.cache
def openvino_core():
    """The process's one ``openvino.Core``. Each Core's CPU plugin installs its own alternate
    signal stack and, when destroyed, puts back the one it found; Cores destroyed in the order
    they were made leave a freed stack installed, and the next signal (Ctrl-C, SIGTERM) then
    kills the process with SIGSEGV (measured with OpenVINO 2026.4.1). One Core avoids that."""
    return require("openvino").Core()


def openvino_runner(xml_path, precision="f32", threads=None):
    """The IR ``xml_path`` compiled for the CPU with the inference precision ``precision``
    (``"f32"`` or ``"bf16"``; INT8 layers of a quantized IR stay INT8) as a function
    images -> features; ``threads`` sets ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default)."""
    config = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino_core().compile_model(str(xml_path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda images: torch.from_numpy(
        request.infer([np.ascontiguousarray(images.cpu().numpy())])[0].copy())


def quantize_openvino(xml_path, calibration, out_path):
    """Post-training INT8 quantization of the IR ``xml_path`` with NNCF (its default mixed
    preset: symmetric per-channel weights, activations from ``calibration``, a list of
    (1, 3, H, W) image tensors); writes ``out_path``."""
    nncf, ov = require("nncf"), require("openvino")
    model = openvino_core().read_model(str(xml_path))
    dataset = nncf.Dataset([image.numpy() for image in calibration])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)


def quantize_onnx(onnx_path, calibration, out_path):
    """Post-training static INT8 quantization of ``onnx_path`` with ONNX Runtime (QDQ format,
    per-channel signed weights, activations calibrated by min-max on ``calibration``, a list of
    (1, 3, H, W) image tensors); writes ``out_path``."""
    quantization = require("onnxruntime.quantization")

    class Images(quantization.CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(calibration)

        def get_next(self):
            image = next(self.remaining, None)
            return None if image is None else {"images": image.numpy()}

    prepared = str(out_path) + ".prepared.onnx"
    quantization.quant_pre_process(str(onnx_path), prepared, skip_symbolic_shape=True)
    quantization.quantize_static(prepared, str(out_path), Images(),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8)
    os.remove(prepared)
