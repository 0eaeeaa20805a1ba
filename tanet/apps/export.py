"""Export a recognizer for deployment: ONNX (run by ONNX Runtime) and ``torch.export`` programs.

Both take clips (N, T, 3, H, W) float, normalised as the model card says, with a dynamic batch
axis N and fixed T, H, W; both return logits (N, num_classes). The ONNX file carries the model
card in its ``metadata_props`` (key ``tanet.card``), so ``tanet predict --onnx`` needs nothing else.

Export runs under ``torch.no_grad()``, where TAM's fast formulation is plain tensor ops (no custom
autograd function), so the exported graph computes exactly what eager inference computes.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tanet.models.recognizer import ModelCard
from tanet.models.checkpoint import CARD_KEY

__all__ = ["export_onnx", "export_program", "load_program", "OnnxRecognizer", "example_input"]


def example_input(card: ModelCard, batch: int = 2) -> torch.Tensor:
    """A random clip batch (batch, T, C, H, W) of the card's shape."""
    c, h, w = card.input_size
    return torch.randn(batch, card.num_segments, c, h, w)


def _card(model: nn.Module) -> ModelCard:
    card = getattr(model, "card", None)
    if card is None:
        raise ValueError("model has no card; build it with tanet.create_model or load a checkpoint")
    return card


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints and its 'torchvision is not installed' warnings."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def export_onnx(model: nn.Module, out: str | os.PathLike, *, opset: int = 18,
                verify: bool = True, atol: float = 1e-4) -> dict[str, Any]:
    """Write ``model`` as ONNX with a dynamic batch axis and the card in the metadata.

    With ``verify`` (needs onnxruntime) the file is run on a random batch of 2 and compared with
    eager PyTorch; raises if the max abs difference exceeds ``atol``. Returns
    ``{"path", "max_abs_diff", "opset"}``.
    """
    import onnx

    from tanet.io import atomic_path

    card = _card(model)
    model = model.eval()
    x = example_input(card)  # (2, T, C, H, W)
    batch = torch.export.Dim("batch", min=1, max=4096)
    out = Path(out)
    with atomic_path(out) as tmp, torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["clips"],
                                    output_names=["logits"], dynamic_shapes={"x": {0: batch}},
                                    opset_version=opset, verbose=False)
        proto = program.model_proto
        onnx.helper.set_model_props(proto, {CARD_KEY: json.dumps(card.to_dict()),
                                            "tanet.input": "clips (N, T, C, H, W) float32, normalised",
                                            "tanet.output": "logits (N, num_classes)"})
        onnx.save_model(proto, str(tmp))
    report: dict[str, Any] = {"path": out, "opset": opset, "max_abs_diff": None}
    if verify:
        session = OnnxRecognizer(out)
        with torch.no_grad():
            ref = model(x).numpy()  # (2, K)
        diff = float(np.abs(session(x.numpy()) - ref).max())
        report["max_abs_diff"] = diff
        if not diff <= atol:
            raise RuntimeError(f"{out}: ONNX Runtime output differs from PyTorch by {diff:.2e} "
                               f"(> {atol:g}); please report this with the model name {card.name}")
    return report


class OnnxRecognizer:
    """An exported model on ONNX Runtime: ``session(clips (N, T, C, H, W) float32) -> logits``.

    ``card`` is read back from the file's metadata.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError("ONNX Runtime is not installed: pip install 'tanet[onnx]'") from e
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RuntimeError(f"{self.path}: ONNX Runtime cannot load it ({e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if CARD_KEY not in meta:
            raise RuntimeError(f"{self.path}: no tanet model card in the ONNX metadata; export "
                               "it with `tanet export --format onnx`")
        self.card = ModelCard.from_dict(json.loads(meta[CARD_KEY]))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = np.ascontiguousarray(clips, dtype=np.float32)  # (N, T, C, H, W)
        return self.session.run(None, {self.input_name: clips})[0]  # (N, K)


def export_program(model: nn.Module, out: str | os.PathLike) -> Path:
    """Save a ``torch.export`` program (``.pt2``) with a dynamic batch axis; the card travels in
    the archive's extra files. Load it with :func:`load_program`."""
    from tanet.io import atomic_path

    card = _card(model)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, (example_input(card),),
                                      dynamic_shapes={"x": {0: batch}})
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={CARD_KEY: json.dumps(card.to_dict())})
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())
    return out


def load_program(path: str | os.PathLike) -> tuple[torch.export.ExportedProgram, ModelCard]:
    """Load a ``.pt2`` written by :func:`export_program`: (program, card). Call
    ``program.module()(clips)`` to run it."""
    extra = {CARD_KEY: ""}
    program = torch.export.load(str(path), extra_files=extra)
    if not extra[CARD_KEY]:
        raise RuntimeError(f"{path}: no tanet model card in the archive")
    return program, ModelCard.from_dict(json.loads(extra[CARD_KEY]))
