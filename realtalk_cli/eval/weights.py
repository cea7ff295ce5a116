"""Loading third-party weights for the evaluation networks from a file the user gives.

Nothing is downloaded and nothing is unpickled: .safetensors files are read as they are, .pth/.pt
files with `torch.load(weights_only=True)`. A wrapped state dict ({"state_dict": ...} or
{"model": ...}) is unwrapped. Parameter names must match the public checkpoint each network names
in its docstring; a mismatch is a RealtalkError that names the first offending key, never a
silently half-loaded network.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from torch import Tensor, nn

from realtalk_cli.checkpoint import read_state_dict
from realtalk_cli.errors import RealtalkError


def load_weights(model: nn.Module, paths: str | os.PathLike | Iterable[str | os.PathLike], what: str,
                 rename: Callable[[str], str | None] = lambda k: k) -> nn.Module:
    """Fill every parameter and buffer of `model` from the file(s) at `paths`; returns it in eval mode.

    `rename` maps a checkpoint key to the model's name, or to None for keys the metric does not use
    (a classifier head, auxiliary logits). Missing keys and shape mismatches are errors.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    wanted = model.state_dict()
    state: dict[str, Tensor] = {}
    for path in paths:
        for k, v in read_state_dict(path, what).items():
            name = rename(k)
            if name is not None and name in wanted:
                state[name] = v
    where = paths[0] if len(paths) == 1 else None
    missing = [k for k in wanted if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise RealtalkError(f"not a {what} checkpoint: missing {missing[0]} (and {len(missing) - 1} more)"
                            if len(missing) > 1 else f"not a {what} checkpoint: missing {missing[0]}", where)
    for k, v in state.items():
        if v.shape != wanted[k].shape:
            raise RealtalkError(f"{what} weight {k} has shape {tuple(v.shape)}, expected {tuple(wanted[k].shape)}", where)
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False)
