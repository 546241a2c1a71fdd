"""Zoo: a folder of LoRA checkpoints with each task's condition; appended atomically, one task at a time.

    <zoo>/zoo.json                 layout, suite, how the checkpoints were made
    <zoo>/manifest.jsonl           one line per checkpoint: task, step, val_acc, shard, row, n_in_task
    <zoo>/shards/<task>-<hash>.safetensors  "params" (N, P) in layout order, "condition.images" (M, H, W) when images
                                   condition; <task> is the name made file-safe, <hash> tells apart names that map
                                   to the same file-safe text (the manifest names each task's shard, so older zoos
                                   with other shard names read as before)

A task's shard is written first (atomic rename), then all its manifest lines in one appended write. A crash can leave
at most a torn tail of the manifest; `Zoo.open` drops any task with fewer lines than its `n_in_task` and rewrites the
manifest atomically, so an interrupted collection resumes without losing or duplicating entries.

A zoo's path is a local folder or an fsspec URL (memory://, s3://, gs://, az://): storage.py gives the same
guarantees there, or refuses a backend that cannot.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from loragen.adapters.adapter import Adapter, check_finite
from loragen.adapters.layout import LoraLayout
from loragen.conditions import Condition
from loragen.errors import LayoutMismatchError, UnknownTaskError, ZooError
from loragen.zoo.storage import Storage, is_url

INFO_FILE, MANIFEST_FILE, SHARDS = "zoo.json", "manifest.jsonl", "shards"


def _shard_name(task: str) -> str:
    """A file name unique to the exact task name: readable part + short hash (e.g. 'a/b' and 'a_b' differ)."""
    readable = re.sub(r"[^A-Za-z0-9_.+-]", "_", task)[:80]  # file-safe, and short enough for any file system
    digest = hashlib.sha256(task.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}.safetensors"


class Zoo:
    """Read and append access to a zoo folder."""

    def __init__(self, path: str | Path, info: dict, entries: list[dict]):
        self.storage = Storage(path)
        self.path = self.storage.root  # a Path for a local zoo, the URL otherwise
        self.info, self.entries = info, entries
        self.layout = LoraLayout.from_dict(info["layout"])
        self._shard_cache: dict[str, dict[str, torch.Tensor]] = {}
        self.read_only = False  # True for views made by subset()

    # ---- open / create ------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, layout: LoraLayout, info: dict | None = None) -> "Zoo":
        """Start an empty zoo; an existing zoo with the same layout is opened instead (resume)."""
        store = Storage(path)
        if store.exists(INFO_FILE):
            zoo = cls.open(path)
            if zoo.layout != layout:
                raise LayoutMismatchError(f"zoo at {path} has another layout: {zoo.layout.describe_difference(layout)}")
            return zoo
        if not store.is_empty():
            raise ZooError(f"{path} exists and is not a zoo (no {INFO_FILE}); expected an empty or new folder")
        full = {"format": 1, **(info or {}), "layout": layout.to_dict()}
        store.make_root(SHARDS)
        zoo = cls(path, full, [])
        zoo.save_info()
        store.append(MANIFEST_FILE, b"")
        return zoo

    @staticmethod
    def exists(path: str | Path) -> bool:
        """True when `path` (a folder or URL) holds a zoo."""
        return Storage(path).exists(INFO_FILE)

    def save_info(self) -> None:
        """Write zoo.json (atomically) from `self.info`."""
        self.storage.write_bytes(INFO_FILE, (json.dumps(self.info, indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def open(cls, path: str | Path) -> "Zoo":
        store = Storage(path if is_url(path) else Path(path))
        if not store.is_file(INFO_FILE):
            raise ZooError(f"expected a zoo folder with {INFO_FILE} at {path}; found {'no folder' if not store.exists() else 'none'}")
        try:
            info = json.loads(store.read_bytes(INFO_FILE))
        except json.JSONDecodeError as e:
            raise ZooError(f"{store.where(INFO_FILE)} is not valid JSON: {e}") from e
        lines = store.read_bytes(MANIFEST_FILE).decode().splitlines() if store.exists(MANIFEST_FILE) else []
        entries, torn = [], False
        for i, line in enumerate(lines):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise ZooError(f"{store.where(MANIFEST_FILE)} line {i + 1} is not JSON (only a torn last line is repaired)")
                torn = True
        counts: dict[str, int] = {}
        for e in entries:
            counts[e["task"]] = counts.get(e["task"], 0) + 1
        complete = [e for e in entries if counts[e["task"]] == e["n_in_task"]]
        seen = set()
        for e in complete:
            if (e["task"], e["step"]) in seen:
                raise ZooError(f"{store.where(MANIFEST_FILE)} holds task {e['task']!r} step {e['step']} twice")
            seen.add((e["task"], e["step"]))
        zoo = cls(path, info, complete)
        if torn or len(complete) != len(entries):
            zoo._rewrite_manifest()  # drop the incomplete task; its collection is redone on resume
        return zoo

    def subset(self, tasks: list[str]) -> "Zoo":
        """A read-only view holding only `tasks` (a fold's training tasks): a generator or baseline given the view
        cannot reach the other tasks' checkpoints or conditions."""
        missing = sorted(set(tasks) - set(self.tasks()))
        if missing:
            raise UnknownTaskError(f"zoo {self.path} has no tasks {missing[:5]}; it holds {len(self.tasks())} tasks")
        keep = set(tasks)
        view = Zoo(self.path, self.info, [e for e in self.entries if e["task"] in keep])
        view._shard_cache = self._shard_cache  # shared read cache; shards are never modified in place
        view.read_only = True
        return view

    def _rewrite_manifest(self) -> None:
        self.storage.write_bytes(MANIFEST_FILE, "".join(json.dumps(e) + "\n" for e in self.entries).encode())

    # ---- append -------------------------------------------------------------------------------------------------
    def add_task(self, task: str, adapters: list[Adapter], condition: Condition, extra: dict | None = None) -> None:
        """Store a task's checkpoints and condition; a task already in the zoo is refused, never duplicated."""
        if self.read_only:
            raise ZooError(f"this view of zoo {self.path} holds a subset of its tasks and is read-only; open the zoo to add tasks")
        if task in self.tasks():
            raise ZooError(f"zoo {self.path} already holds task {task!r}; expected a new task")
        if not adapters:
            raise ZooError(f"task {task!r}: expected at least one checkpoint, found none")
        vectors = []
        for a in adapters:
            if a.layout != self.layout:
                raise LayoutMismatchError(f"task {task!r}: {self.layout.describe_difference(a.layout)}")
            vectors.append(a.vector())
        params = torch.stack(vectors)  # (N, P)
        check_finite(params, f"checkpoints of task {task!r}")
        tensors = {"params": params}
        if condition.images is not None:
            tensors["condition.images"] = condition.images.float()
        shard = f"{SHARDS}/{_shard_name(task)}"
        owner = next((e["task"] for e in self.entries if e["shard"] == shard), None)
        if owner is not None:  # never overwrite another task's checkpoints (a hash collision, or a hand-made manifest)
            raise ZooError(f"task {task!r}: expected a shard file of its own; found {shard} already holds task {owner!r}")
        from safetensors.torch import save

        self.storage.write_bytes(shard, save({k: v.contiguous() for k, v in tensors.items()}))
        cond = {"text": condition.text, "examples": condition.examples, "label": condition.label,
                "images": "condition.images" if condition.images is not None else None}
        if condition.paraphrases:
            cond["paraphrases"] = condition.paraphrases
        lines = []
        for row, a in enumerate(adapters):
            entry = {"task": task, "step": a.meta.get("step", row), "val_acc": a.meta.get("val_acc"), "shard": shard,
                     "row": row, "n_in_task": len(adapters), "condition": cond, **(extra or {})}
            lines.append(entry)
        # one write: all of a task's lines or (after repair) none
        self.storage.append(MANIFEST_FILE, "".join(json.dumps(e) + "\n" for e in lines).encode())
        self.entries.extend(lines)

    # ---- read ---------------------------------------------------------------------------------------------------
    def tasks(self) -> list[str]:
        """Task names in the order they were added."""
        return list(dict.fromkeys(e["task"] for e in self.entries))

    def _shard(self, shard: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        if shard not in self._shard_cache:
            try:
                self._shard_cache[shard] = load(self.storage.read_bytes(shard))
            except Exception as e:
                raise ZooError(f"zoo shard {self.storage.where(shard)} is missing or unreadable: {e}") from e
        return self._shard_cache[shard]

    def require_nonempty(self) -> None:
        if not self.entries:
            raise ZooError(f"zoo at {self.path} is empty; expected checkpoints (run `loragen zoo collect` or `zoo import`)")

    def task_entries(self, task: str) -> list[dict]:
        rows = [e for e in self.entries if e["task"] == task]
        if not rows:
            raise UnknownTaskError(f"zoo {self.path} has no task {task!r}; it holds {self.tasks()}")
        return rows

    def vectors(self, task: str) -> torch.Tensor:
        """(N, P) checkpoints of one task, in step order."""
        rows = sorted(self.task_entries(task), key=lambda e: e["step"])
        params = self._shard(rows[0]["shard"])["params"]
        if params.shape[1] != self.layout.numel:
            raise ZooError(f"shard of task {task!r}: expected {self.layout.numel} parameters per row, found {params.shape[1]}")
        return params[[e["row"] for e in rows]]

    def peft_info(self) -> dict:
        """The PEFT task type and base model of the zoo's adapters: {"task_type", "base_model_name_or_path"}, None
        where unknown (zoos written before loragen recorded them, or adapters whose configs left them out)."""
        p = self.info.get("peft") or {}
        return {"task_type": p.get("task_type"), "base_model_name_or_path": p.get("base_model_name_or_path")}

    def adapters(self, task: str) -> list[Adapter]:
        rows = sorted(self.task_entries(task), key=lambda e: e["step"])
        peft = self.peft_info()
        return [Adapter.from_vector(self.layout, v, {"task": task, "step": e["step"], "val_acc": e["val_acc"], "peft": dict(peft)})
                for v, e in zip(self.vectors(task), rows)]

    def best_adapter(self, task: str) -> Adapter:
        """The task's checkpoint with the best validation accuracy (the latest on ties, and when none is recorded)."""
        return max(self.adapters(task), key=lambda a: (a.meta.get("val_acc") or 0.0, a.meta["step"]))

    def all_vectors(self) -> tuple[torch.Tensor, list[str]]:
        """(M, P) every checkpoint, and the task of each row."""
        self.require_nonempty()
        vs, names = [], []
        for t in self.tasks():
            v = self.vectors(t)
            vs.append(v)
            names += [t] * len(v)
        return torch.cat(vs), names

    def condition(self, task: str) -> Condition:
        """The task's stored condition: the whole pool of exemplar images (M, H, W) or examples it was drawn from."""
        e = self.task_entries(task)[0]
        c = e["condition"]
        images = self._shard(e["shard"])[c["images"]] if c.get("images") else None
        return Condition(task=task, text=c.get("text"), examples=c.get("examples"), images=images, label=c.get("label"),
                         paraphrases=c.get("paraphrases"))

    def digest(self, ignore: tuple[str, ...] = ("finetune_s",)) -> str:
        """sha256 of the zoo's content: zoo.json, then each task in order with its manifest lines (less the fields in
        `ignore`: timings differ between runs) and its shard's bytes. Equal digests: the same zoo bit for bit."""
        h = hashlib.sha256(json.dumps(self.info, sort_keys=True).encode())
        for t in self.tasks():
            rows = self.task_entries(t)
            h.update(json.dumps([{k: v for k, v in e.items() if k not in ignore} for e in rows], sort_keys=True).encode())
            h.update(self.storage.read_bytes(rows[0]["shard"]))
        return h.hexdigest()

    def size_bytes(self) -> int:
        return self.storage.size_bytes()
