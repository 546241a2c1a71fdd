"""Importing PEFT LoRA folders trained elsewhere into a zoo: each folder's task and condition come from the command
line or from a `loragen_task.json` sidecar inside the folder."""

from __future__ import annotations

import json
from pathlib import Path

from loragen.adapters.adapter import Adapter
from loragen.conditions import Condition
from loragen.errors import ZooError
from loragen.zoo.store import Zoo

SIDECAR = "loragen_task.json"


def import_peft(zoo_path: str | Path, folders: list[str | Path], task: str | None = None, condition: str | None = None,
                examples: list[str] | None = None) -> Zoo:
    """Build or extend a zoo from PEFT LoRA folders trained by anyone.

    Each folder's task, condition text and few-shot example lines come from `task` / `condition` / `examples` or,
    when `task` is None, from a sidecar `loragen_task.json` ({"task": ..., "condition": ..., "examples": [...]}) inside
    the folder. Folders of one task become that task's
    checkpoints, in the order given. All folders must share one layout (target modules, ranks, shapes), and match
    the zoo's layout when the zoo exists. Their PEFT `task_type` and `base_model_name_or_path` (adapter_config.json)
    must agree with each other and with the zoo's (null means unknown and agrees with anything); the zoo keeps the
    known values in zoo.json under "peft", so that generated adapters carry them.
    """
    if not folders:
        raise ZooError("expected at least one PEFT adapter folder to import; found none")
    existing = Zoo.open(zoo_path) if Zoo.exists(zoo_path) else None
    layout = existing.layout if existing else None
    peft = None  # the PEFT task type and base model the folders agree on
    groups: dict[str, list[Adapter]] = {}  # task -> its checkpoints, in the order given
    conditions: dict[str, Condition] = {}
    for folder in folders:
        folder = Path(folder)
        name, text, shots = task, condition, examples
        if name is None:
            side = folder / SIDECAR
            if not side.is_file():
                raise ZooError(f"{folder}: expected a task name (--task) or a sidecar {SIDECAR}; found neither")
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError as e:
                raise ZooError(f"{side} is not valid JSON: {e}") from e
            if not isinstance(meta, dict) or not isinstance(meta.get("task"), str):
                raise ZooError(f'{side}: expected {{"task": "<name>", "condition": "<text>"}}; found {meta!r}')
            name, text, shots = meta["task"], meta.get("condition", condition), meta.get("examples", examples)
        adapter = Adapter.load(folder, layout=layout)  # a layout mismatch with earlier folders or the zoo raises here
        layout = layout or adapter.layout
        found = adapter.meta["peft"]
        peft = _agreed_peft(peft, found, "the folders before it", str(folder)) if peft is not None else found
        adapters = groups.setdefault(name, [])
        adapter.meta = {"task": name, "step": len(adapters), "val_acc": None, "source": str(folder), "peft": found}
        adapters.append(adapter)
        conditions.setdefault(name, Condition(task=name, text=text, examples=shots))
    clash = sorted(set(groups) & set(existing.tasks())) if existing else []
    if clash:  # checked before anything is written, so that nothing is half-imported
        raise ZooError(f"zoo {zoo_path} already holds tasks {clash}; expected new tasks")
    if existing is not None:  # zoos written before loragen kept these have them unknown (None)
        peft = _agreed_peft(existing.peft_info(), peft, f"zoo {zoo_path}", "the folders to import")
    zoo = existing or Zoo.create(zoo_path, layout, {"suite": None, "imported": True, "peft": peft})
    if zoo.info.get("peft") != peft:  # the new folders name what the zoo did not know yet
        zoo.info["peft"] = peft
        zoo.save_info()
    for name, adapters in groups.items():
        zoo.add_task(name, adapters, conditions[name], {"source": "import"})
    return zoo


def _agreed_peft(known: dict, found: dict, known_from: str, found_from: str) -> dict:
    """The PEFT task type and base model of two sets of adapters, which must agree: None (unknown) agrees with
    anything, two different values are refused. Returns every value either side knows."""
    out = {}
    for key in ("task_type", "base_model_name_or_path"):
        a, b = known.get(key), found.get(key)
        if a is not None and b is not None and a != b:
            raise ZooError(f"{found_from}: expected {key} {a!r} (that of {known_from}); found {b!r}. "
                           "Import adapters of one base model and task type per zoo")
        out[key] = a if a is not None else b
    return out
