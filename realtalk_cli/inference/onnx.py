"""The onnxruntime backend: exported graphs (`realtalk export`) behind the interface inference uses."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from realtalk_cli.errors import RealtalkError


class OnnxModel:
    """Run an exported graph with onnxruntime: takes and returns torch tensors like the module did."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RealtalkError("onnxruntime is not installed: pip install 'realtalk[onnx]' (CPU) or 'realtalk[gpu]'") from None
        path = Path(path)
        if not path.is_file():
            raise RealtalkError("ONNX model not found (run `realtalk export` first)", path)
        available = ort.get_available_providers()
        wanted = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        self.providers = [p for p in wanted if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: x.detach().cpu().numpy() for n, x in zip(self.input_names, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])


class OnnxNet:
    """An exported graph behind the small part of the nn.Module interface that inference uses."""

    def __init__(self, runner, cfg):
        self.runner, self.cfg, self.training = runner, cfg, False

    def __call__(self, *x):
        return self.runner(*x)

    def parameters(self):
        yield torch.empty(0)  # inputs are prepared on the CPU; onnxruntime moves them itself

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self
