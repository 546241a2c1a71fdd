"""Adapter: LoRA tensors + their layout + metadata; saved and loaded as a PEFT folder.

A PEFT LoRA folder holds `adapter_config.json` (a LoraConfig) and `adapter_model.safetensors` whose keys read
`base_model.model.<module>.lora_A.weight` (r, i) and `...lora_B.weight` (o, r); modules the adapter carries whole
(`modules_to_save`, e.g. a classification head) are `base_model.model.<module>.weight` / `.bias`. loragen's metadata (task, condition,
step, how it was made) rides in the safetensors header under "loragen", which PEFT ignores. The config's `task_type`
and `base_model_name_or_path` (what `AutoPeftModel*` classes need) are kept in `meta["peft"]` and written back on save.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loragen import atomic
from loragen.adapters.layout import FullModule, LoraLayout, LoraModule
from loragen.errors import AdapterFileError, LayoutMismatchError, NonFiniteError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
_FULL_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<which>weight|bias)$")


def check_finite(vector: torch.Tensor, what: str) -> None:
    """Raise NonFiniteError naming how many entries of `what` are NaN or Inf."""
    bad = ~torch.isfinite(vector)
    if bad.any():
        raise NonFiniteError(f"{what} must hold finite values; found {int(bad.sum())} NaN/Inf of {vector.numel()}")


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


@dataclass
class Adapter:
    """One LoRA adapter: canonical tensors {"<module>.lora_A": (r, i), "<module>.lora_B": (o, r)}."""

    layout: LoraLayout
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)  # task, condition, step, source, peft ... (JSON-serialisable)

    def __post_init__(self):
        self.layout.check_tensors(self.tensors)

    @classmethod
    def from_vector(cls, layout: LoraLayout, vector: torch.Tensor, meta: dict | None = None) -> "Adapter":
        return cls(layout, layout.unflatten(vector), dict(meta or {}))

    def vector(self) -> torch.Tensor:
        """(P,) float32 in layout order."""
        return self.layout.flatten(self.tensors)

    def delta(self, module: LoraModule) -> torch.Tensor:
        """ΔW = (alpha / r) · B @ A, (o, i)."""
        a, b = self.tensors[f"{module.name}.lora_A"], self.tensors[f"{module.name}.lora_B"]
        return module.scaling * (b @ a)

    # ---- PEFT folder --------------------------------------------------------------------------------------------
    def peft_config(self, base_model_name_or_path: str | None = None) -> dict:
        """The adapter_config.json content; uneven ranks or alphas go into PEFT's rank_pattern / alpha_pattern.
        task_type and base_model_name_or_path come from meta["peft"] when present; an explicit argument wins."""
        from peft import LoraConfig

        peft = self.meta.get("peft") or {}
        if base_model_name_or_path is None:
            base_model_name_or_path = peft.get("base_model_name_or_path")
        ranks = Counter(m.rank for m in self.layout.modules).most_common(1)[0][0]
        alphas = Counter(m.alpha for m in self.layout.modules).most_common(1)[0][0]
        cfg = LoraConfig(
            r=ranks,
            lora_alpha=alphas,
            lora_dropout=0.0,
            target_modules=sorted(self.layout.target_names),
            modules_to_save=[f.name for f in self.layout.full] or None,
            rank_pattern={m.name: m.rank for m in self.layout.modules if m.rank != ranks},
            alpha_pattern={m.name: m.alpha for m in self.layout.modules if m.alpha != alphas},
            base_model_name_or_path=base_model_name_or_path,
            task_type=peft.get("task_type"),
        )
        d = cfg.to_dict()
        return json.loads(json.dumps(d, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))

    def save(self, path: str | Path, overwrite: bool = False, base_model_name_or_path: str | None = None) -> Path:
        """Write a PEFT folder atomically; an existing folder is replaced only with overwrite=True."""
        check_finite(self.vector(), f"adapter {self.meta.get('task') or ''}".strip())
        weights = {}
        for m in self.layout.modules:
            weights[f"base_model.model.{m.name}.lora_A.weight"] = self.tensors[f"{m.name}.lora_A"].float()
            weights[f"base_model.model.{m.name}.lora_B.weight"] = self.tensors[f"{m.name}.lora_B"].float()
        for seg in self.layout.full_segments:
            weights[f"base_model.model.{seg.key}"] = self.tensors[seg.key].float()
        meta = {"format": "pt", "loragen": json.dumps({"meta": self.meta, "layout": self.layout.to_dict()})}
        with atomic.folder(path, overwrite=overwrite) as tmp:
            atomic.write_json(tmp / CONFIG_FILE, self.peft_config(base_model_name_or_path))
            atomic.save_safetensors(tmp / WEIGHTS_FILE, weights, metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, layout: LoraLayout | None = None) -> "Adapter":
        """Read a PEFT LoRA folder (ours or anyone's); with `layout`, check it matches and use its module order."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_dir():
            raise AdapterFileError(f"expected an adapter folder at {path}; found {'a file' if path.exists() else 'nothing'}")
        present = sorted(p.name for p in path.iterdir())
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise AdapterFileError(f"{path} is not a PEFT adapter folder: expected {name}, found files {present}")
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AdapterFileError(f"{path / CONFIG_FILE} is not valid JSON: {e}") from e
        if not isinstance(config, dict) or config.get("peft_type") != "LORA":
            found = config.get("peft_type") if isinstance(config, dict) else type(config).__name__
            raise AdapterFileError(f"{path} must be a PEFT LoRA adapter (peft_type 'LORA'); found peft_type {found!r}")
        for flag in ("use_rslora", "use_dora"):
            if config.get(flag):
                raise AdapterFileError(f"{path}: {flag}=true is not supported; expected plain LoRA")
        peft = {"task_type": config.get("task_type"), "base_model_name_or_path": config.get("base_model_name_or_path")}
        if peft["task_type"] is not None and peft["task_type"] not in _task_types():
            raise AdapterFileError(f"{path / CONFIG_FILE}: expected task_type null or one of {_task_types()}; "
                                   f"found {peft['task_type']!r}")
        if not isinstance(peft["base_model_name_or_path"], (str, type(None))):
            raise AdapterFileError(f"{path / CONFIG_FILE}: expected base_model_name_or_path a string or null; "
                                   f"found {peft['base_model_name_or_path']!r}")
        try:
            with safe_open(str(path / WEIGHTS_FILE), framework="pt") as f:
                header = f.metadata() or {}
                raw = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several types on truncated or garbled files
            raise AdapterFileError(f"{path / WEIGHTS_FILE} is not a readable safetensors file: {e}") from e

        saved = config.get("modules_to_save") or []
        tensors, shapes, full_shapes = {}, {}, {}
        for key, t in raw.items():
            m, f = _KEY.match(key), _FULL_KEY.match(key)
            if m is not None:
                tensors[f"{m['module']}.lora_{m['which']}"] = t.float()
                shapes.setdefault(m["module"], {})[m["which"]] = tuple(t.shape)
            elif f is not None and any(f["module"] == s or f["module"].endswith("." + s) for s in saved):
                tensors[f"{f['module']}.{f['which']}"] = t.float()
                full_shapes.setdefault(f["module"], {})[f["which"]] = tuple(t.shape)
            else:
                raise AdapterFileError(
                    f"{path / WEIGHTS_FILE}: expected keys 'base_model.model.<module>.lora_A.weight' / "
                    f"'...lora_B.weight' (or weight/bias of modules_to_save {saved}); found {key!r}"
                )
        found_modules = []
        for name in sorted(shapes, key=_natural_key):
            if set(shapes[name]) != {"A", "B"}:
                raise AdapterFileError(f"{path}: module {name!r} needs both lora_A and lora_B; found {sorted(shapes[name])}")
            (r, i), (o, r_b) = shapes[name]["A"], shapes[name]["B"]
            if r != r_b:
                raise AdapterFileError(f"{path}: module {name!r} lora_A rank {r} != lora_B rank {r_b}")
            alpha = _pattern_value(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", 8))
            found_modules.append(LoraModule(name, i, o, r, float(alpha)))
        if not found_modules:
            raise AdapterFileError(f"{path / WEIGHTS_FILE} holds no LoRA tensors")
        found_full = []
        for name in sorted(full_shapes, key=_natural_key):
            if "weight" not in full_shapes[name] or len(full_shapes[name]["weight"]) != 2:
                raise AdapterFileError(f"{path}: whole module {name!r} needs a 2-D weight; found {full_shapes[name]}")
            o, i = full_shapes[name]["weight"]
            found_full.append(FullModule(name, i, o, "bias" in full_shapes[name]))
        found_layout = LoraLayout(found_modules, found_full)
        if layout is not None:
            if {m.name: m for m in layout.modules + layout.full} != {m.name: m for m in found_modules + found_full}:
                raise LayoutMismatchError(f"adapter at {path} does not fit: {layout.describe_difference(found_layout)}")
            found_layout = layout
        meta = json.loads(header["loragen"])["meta"] if "loragen" in header else {"source": str(path)}
        meta["peft"] = peft  # the config is what PEFT reads: it wins over a copy in loragen's header
        adapter = cls(found_layout, tensors, meta)
        check_finite(adapter.vector(), f"adapter at {path}")
        return adapter


def _task_types() -> list[str]:
    """PEFT's task types (SEQ_CLS, CAUSAL_LM, ...)."""
    from peft import TaskType

    return [t.value for t in TaskType]


def _pattern_value(pattern: dict, name: str, default):
    """PEFT's rank/alpha pattern: a key applies to a module whose name equals it or ends with '.<key>'."""
    for key, value in pattern.items():
        if name == key or name.endswith("." + key) or re.fullmatch(key, name):
            return value
    return default
