"""int8 ONNX: ONNX Runtime static quantisation (QDQ, per-channel int8 weights, uint8 activations).

``export_int8(model, out, calibrate=LIST_OR_DIR)`` exports the fp32 ONNX graph, calibrates the
activation ranges on real clips decoded and transformed exactly as ``tanet predict`` does
(:meth:`Predictor.load_views` of the fp32 file: same frames, resize, crop, normalisation), writes
the QDQ model with the model card in its metadata, and checks it: top-1 agreement with fp32 and
both accuracies on a validation list. The result runs wherever an ``.onnx`` does
(``tanet predict --onnx``, :class:`~tanet.apps.predict.Predictor`).

What stays in float (``keep_float``), measured in ``benchmarks/predict.py`` and on the demo's
validation set (docs/how-to/faster-inference.md):
  * ``"tam-kernel"`` (default): TAM's kernel generation (branches G and L: the small Gemms, BN,
    softmax, sigmoid on the pooled (N, C, T) sequence); the adaptive aggregation (the per-frame
    multiply-adds over the feature map) runs as int8;
  * ``"tam"``: all of TAM, the aggregation too;
  * ``"none"``: everything that ONNX Runtime can quantise.
Convolutions, the classifier and the residual additions are int8 in every mode.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = ["export_int8", "quantize_onnx", "tam_nodes", "calibration_videos", "compare",
           "KEEP_FLOAT"]

KEEP_FLOAT = ("tam-kernel", "tam", "none")
_SCOPES = "pkg.torch.onnx.name_scopes"  # where the exporter records each node's module path
_POOLING = {"ReduceSum", "ReduceMean", "GlobalAveragePool"}


def tam_nodes(model: Any) -> tuple[set[str], set[str]]:
    """Names of TAM's nodes in an exported ONNX graph: (kernel generation, aggregation).

    A node belongs to TAM when its module path has a ``.temporal`` scope. The aggregation nodes
    are those reached from a TAM's input feature map without passing a pooling node (reshape,
    pad, slices, multiply-adds over (N, T, C, HW)); the rest build the kernel from the pooled
    sequence."""
    def scope(node) -> str:
        return next((p.value for p in node.metadata_props if p.key == _SCOPES), "")

    nodes = [n for n in model.graph.node if ".temporal" in scope(n)]
    inside = {n.name for n in nodes}
    produced = {o for n in nodes for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # a TAM's feature-map input: a non-constant tensor made outside TAM, used inside it
    inits = {t.name for t in model.graph.initializer}
    inits |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    frontier = [t for t in consumers if t not in produced and t not in inits and t]
    aggregation: set[str] = set()
    while frontier:
        for n in consumers.get(frontier.pop(), []):
            if n.name in aggregation or n.op_type in _POOLING:
                continue
            aggregation.add(n.name)
            frontier.extend(n.output)
    return inside - aggregation, aggregation


def calibration_videos(source: str | os.PathLike, *, root: str | os.PathLike | None = None,
                       class_names: Sequence[str] | None = None,
                       limit: int | None = None) -> tuple[list[str], list[int] | None]:
    """Videos (and labels, when the source has them) of ``source`` as every command reads it
    (:func:`tanet.data.sources.resolve_videos`; ``class_names`` fix the label order), at most
    ``limit`` spread evenly over it (an even spread covers every class of a sorted list)."""
    from tanet.data.sources import resolve_videos

    src = resolve_videos(source, root=root, labels=class_names)
    paths, labels = src.paths, src.labels
    if limit and len(paths) > limit:
        pick = np.linspace(0, len(paths) - 1, limit).astype(int)
        paths = [paths[i] for i in pick]
        labels = None if labels is None else [labels[i] for i in pick]
    return paths, labels


class _Reader:
    """ONNX Runtime's calibration reader over an iterator of clip batches."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        clips = next(self.batches, None)  # (V, T, C, H, W) float32
        return None if clips is None else {self.input_name: clips}


def quantize_onnx(fp32: str | os.PathLike, out: str | os.PathLike,
                  calibration: Iterable[np.ndarray], *, keep_float: str = "tam-kernel",
                  method: str = "minmax") -> Path:
    """Write the QDQ int8 version of the fp32 ONNX file ``fp32`` to ``out``, with activation
    ranges from ``calibration`` (clip batches (V, T, C, H, W) float32, normalised). The fp32
    file's metadata (model card) is copied over."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tanet.io import atomic_path

    if keep_float not in KEEP_FLOAT:
        raise ValueError(f"keep_float must be one of {', '.join(KEEP_FLOAT)}; got {keep_float!r}")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {', '.join(methods)}; got {method!r}")
    src = onnx.load(str(fp32))
    kernel, aggregation = tam_nodes(src)
    exclude = {"tam": kernel | aggregation, "tam-kernel": kernel, "none": set()}[keep_float]
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp, _quiet_quantizer():
        prep = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prep))  # shape inference + graph optimisation
        with atomic_path(out) as dst:
            quantize_static(str(prep), str(dst), _Reader(src.graph.input[0].name, iter(calibration)),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=sorted(exclude),
                            extra_options={"CalibMaxIntermediateOutputs": 16})
            q = onnx.load(str(dst))
            meta = {p.key: p.value for p in src.metadata_props}
            meta["tanet.int8"] = json.dumps({"format": "QDQ", "weights": "int8 per-channel",
                                             "activations": "uint8", "keep_float": keep_float,
                                             "calibration": method})
            onnx.helper.set_model_props(q, meta)
            onnx.save_model(q, str(dst))
    return out


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantiser logs a warning per rank-1 weight (TAM's BatchNorm1d) on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def compare(fp32: Any, int8: Any, videos: Sequence[str | os.PathLike], labels: Sequence[int] | None = None,
            *, views: str = "1x1", quiet: bool = True) -> dict[str, Any]:
    """Top-1 of a reference and a low-precision model (files or Predictors) on the same clips:
    agreement, the largest class-probability difference (max over videos, and its mean), and
    with labels both accuracies. Each video is decoded once and fed to both."""
    from tqdm import tqdm

    from tanet.apps.predict import Predictor

    ref, low = (m if isinstance(m, Predictor) else Predictor(m, views=views, amp="off")
                for m in (fp32, int8))  # a PyTorch file is the fp32 reference, not amp auto
    top_ref, top_low, dprob = [], [], []
    for path in tqdm(videos, desc="validate", unit="video", disable=quiet):
        _, clips, _ = ref.load_views(path)  # (V, T, C, s, s)
        p_ref = _softmax(ref.backend(clips).mean(0))  # (K,)
        p_low = _softmax(low.backend(clips).mean(0))  # (K,)
        top_ref.append(int(p_ref.argmax()))
        top_low.append(int(p_low.argmax()))
        dprob.append(float(np.abs(p_ref - p_low).max()))
    a, b = np.array(top_ref), np.array(top_low)
    res: dict[str, Any] = {"videos": len(videos), "agreement": float((a == b).mean()),
                           "max_abs_dprob": max(dprob), "mean_max_abs_dprob": float(np.mean(dprob))}
    if labels is not None:
        y = np.asarray(labels)
        res.update(top1_fp32=float((a == y).mean()), top1_int8=float((b == y).mean()))
        res["top1_diff"] = res["top1_int8"] - res["top1_fp32"]
    return res


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())  # (K,)
    return e / e.sum()


def _calibration_batches(predictor: Any, videos: Sequence[str], quiet: bool) -> Iterator[np.ndarray]:
    from tqdm import tqdm

    for path in tqdm(videos, desc="calibrate", unit="video", disable=quiet):
        _, clips, _ = predictor.load_views(path)  # (V, T, C, s, s)
        yield clips.numpy()


def export_int8(model: Any, out: str | os.PathLike, *, calibrate: str | os.PathLike,
                validate: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                limit: int | None = 100, keep_float: str = "tam-kernel",
                method: str = "minmax",
                views: str = "1x1", fp32: str | os.PathLike | None = None,
                quiet: bool = False) -> dict[str, Any]:
    """Export ``model`` (a Recognizer with a card) as int8 ONNX calibrated on the videos of
    ``calibrate`` (at most ``limit``, spread evenly over the list); then compare with fp32 on
    ``validate`` (default: the calibration list, all of it). ``fp32``: the model's fp32 ONNX
    export when there is one already (else it is exported to a temporary file). Returns the
    report of :func:`compare` plus ``path``, ``calibration_videos`` and ``keep_float``."""
    from tanet.apps.export import export_onnx
    from tanet.apps.predict import Predictor

    names = model.card.class_names
    cal_videos, _ = calibration_videos(calibrate, root=root, class_names=names, limit=limit)
    val_videos, val_labels = calibration_videos(validate or calibrate, root=root,
                                                class_names=names)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = fp32 or export_onnx(model, Path(tmp) / "fp32.onnx")["path"]
        predictor = Predictor(fp32, views=views)
        quantize_onnx(fp32, out, _calibration_batches(predictor, cal_videos, quiet),
                      keep_float=keep_float, method=method)
        report = compare(fp32, out, val_videos, val_labels, views=views, quiet=quiet)
    return {"path": Path(out), "calibration_videos": len(cal_videos), "keep_float": keep_float,
            **report}
