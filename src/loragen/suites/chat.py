"""`loragen chat`: a causal LM, with a PEFT adapter when given, answering one chat message, its reply streamed.

The base model is the adapter's own (`base_model_name_or_path` in its adapter_config.json, what loragen writes), or
`--model` (a local folder, or 'smollm2': the packaged model, converted once into the cache). The adapter is loaded
with PEFT's `PeftModel.from_pretrained`, exactly as a user's own code would; the reply is greedy and ends at the chat
template's end of turn. Streaming uses transformers' TextStreamer, writing to a given stream instead of printing.

The message is sent in a prompt context (llm_tasks.context_messages): the one the adapter was trained to work with,
which a hyper generator of a suite with an adapter context records in each adapter (`prompt_context`: the context, the
condition's description and, for few-shot, its first example lines), or one the user gives; by default the message
alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import torch
from torch import nn
from transformers import GenerationConfig, TextStreamer  # only `loragen chat` imports this module

from loragen.adapters.adapter import Adapter
from loragen.conditions import Condition
from loragen.errors import ConfigError
from loragen.suites.causal_lm import load_model, load_tokenizer, model_folder
from loragen.suites.completion import end_of_turn, pad_id, prompt_text
from loragen.suites.llm_tasks import CONTEXTS, context_messages


def adapter_base(adapter: Path) -> str:
    """The base model a PEFT adapter folder names; the folder must be a CAUSAL_LM LoRA adapter."""
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise ConfigError(f"expected a PEFT adapter folder with adapter_config.json at {adapter}; found none")
    info = json.loads(config.read_text())
    if info.get("task_type") != "CAUSAL_LM":
        raise ConfigError(f"expected an adapter for a causal LM (task_type CAUSAL_LM) at {adapter}; found task_type "
                          f"{info.get('task_type')!r}")
    if not info.get("base_model_name_or_path"):
        raise ConfigError(f"{config} names no base model (base_model_name_or_path); pass --model")
    return info["base_model_name_or_path"]


def recorded_context(adapter: Path) -> dict:
    """The prompt context a generated adapter records ({"context", "description", "examples"}); {} when it records
    none (a fine-tuned or imported adapter, or one trained on the input alone)."""
    adapter_base(adapter)  # a CAUSAL_LM adapter folder: the clear error before Adapter.load's
    return Adapter.load(adapter).meta.get("prompt_context") or {}


def chat_messages(message: str, adapter: Path | None = None, context: str | None = None, description: str | None = None,
                  examples: list[str] | None = None) -> tuple[list[dict], str]:
    """(messages, what they hold: '' for the message alone): `message` in a prompt context: `context` (else the
    adapter's recorded one, else none) with `description` and example lines `'<input>' -> <answer>` (each else the
    adapter's recorded ones)."""
    recorded = recorded_context(adapter) if adapter is not None else {}
    context = context or recorded.get("context") or "none"
    if context not in CONTEXTS:
        raise ConfigError(f"the prompt context must be one of {CONTEXTS}; found {context!r}")
    description = description or recorded.get("description")
    lines = examples or recorded.get("examples") or []
    shots = Condition(task="chat", examples=list(lines)).labelled_examples() if context == "few-shot" else []
    if context != "none" and not description:
        raise ConfigError(f"the {context} prompt context starts with the task's description; found none (pass --description)")
    messages = context_messages(context, message, description, shots)
    if context == "none":
        return messages, ""
    held = "the description" + (f" and {len(shots)} examples" if context == "few-shot" else "")
    source = " (as the adapter was trained)" if context == recorded.get("context") else ""
    return messages, f"prompt context {context}{source}: {held}, then the message"


def load_chat_model(adapter: Path | None = None, model: str | Path | None = None) -> tuple[nn.Module, object]:
    """(model, tokenizer): the base causal LM (from `model`, else the adapter's base, else the packaged SmolLM2) with
    the adapter loaded by PEFT when given."""
    named = adapter_base(adapter) if adapter is not None else None  # checks the folder: a clear error before PEFT's
    folder = model_folder(model if model is not None else named or "smollm2")
    lm = load_model(folder)
    if adapter is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(adapter))
    return lm.eval(), load_tokenizer(folder)


class StreamWriter(TextStreamer):
    """transformers' TextStreamer, writing finished text to `stream` (its documented on_finalized_text hook) instead of
    printing it."""

    def __init__(self, tokenizer, stream: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


@torch.no_grad()
def stream_reply(lm: nn.Module, tokenizer, messages: str | list[dict], max_new_tokens: int, stream: TextIO) -> str:
    """Write the greedy reply to `messages` (a conversation, or one user message) to `stream` as it is generated;
    returns it whole (cut at the end of turn, stripped)."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1; found {max_new_tokens}")
    end = end_of_turn(tokenizer)
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id(tokenizer),
                              eos_token_id=tokenizer(end, add_special_tokens=False)["input_ids"][0])
    out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                      streamer=StreamWriter(tokenizer, stream))
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False).split(end, 1)[0].strip()
