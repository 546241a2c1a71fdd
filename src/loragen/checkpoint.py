"""Training state (modules + optimisers + progress) saved with safetensors and JSON, never pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from loragen import atomic


def save_state(path: str | Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """One safetensors file: module weights, optimiser moments, extra tensors; JSON header for the rest."""
    out = {f"module.{name}.{k}": v.detach() for name, m in modules.items() for k, v in m.state_dict().items()}
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                out[f"optim.{name}.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        groups[name] = sd["param_groups"]
    out.update({f"tensor.{k}": v for k, v in tensors.items()})
    atomic.save_safetensors(path, out, {"meta": json.dumps(meta), "param_groups": json.dumps(groups)})


def read_meta(path: str | Path) -> dict:
    """The meta dict of a saved state, without loading its tensors (check it before restoring anything)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["meta"])


def load_state(path: str | Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
               ) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore modules and optimisers in place; return the extra tensors and the meta dict."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        raw = {k: f.get_tensor(k) for k in f.keys()}
    for name, m in modules.items():
        prefix = f"module.{name}."
        m.load_state_dict({k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)})
    groups = json.loads(header["param_groups"])
    for name, opt in optimizers.items():
        state: dict[int, dict] = {}
        prefix = f"optim.{name}."
        for k, v in raw.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix):].split(".", 1)
                state.setdefault(int(pid), {})[key] = v
        opt.load_state_dict({"state": state, "param_groups": groups[name]})
    extra = {k[len("tensor."):]: v for k, v in raw.items() if k.startswith("tensor.")}
    return extra, json.loads(header["meta"])
