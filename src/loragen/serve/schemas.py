"""The service's request and response bodies. Types and shapes are pydantic's to check; the limits that depend on
the server's configuration (n, text length, counts, image size) are checked by `check_condition` and the codec."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loragen.errors import RequestError

Image = list[list[float]]  # (H, W) rows of pixels


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str  # the example's input text
    label: str = Field(max_length=64)  # its label, e.g. "yes" / "no"


class ConditionBody(BaseModel):
    """A condition: a suite task's own exemplars, a description with labelled examples, exemplar images, or a class."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(None, max_length=200, description="a task of the generator's suite: its exemplars")
    description: str | None = Field(None, description="what the task is (text generators)")
    examples: list[Example] | None = Field(None, description="labelled few-shot examples (text generators)")
    images: list[Image] | None = Field(None, description="exemplar images (K, H, W) (image generators)")
    label: int | None = Field(None, ge=0, description="a class id (class-conditioned generators)")


class AdapterRequest(ConditionBody):
    n: Annotated[int, Field(ge=1, description="how many adapters")] = 1
    seed: Annotated[int, Field(ge=0, lt=2**31, description="sampling seed")] = 0


class AdapterResponse(BaseModel):
    ids: list[str]  # one per adapter; GET /v1/adapters/{id} downloads it
    cached: bool  # True: an identical condition hit the cache, nothing was generated
    generate_ms: float  # time spent generating (0 on a cache hit)
    suite: str  # the generator's suite (what the adapters apply to)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter_id: str | None = Field(None, max_length=64, description="an id from POST /v1/adapters")
    condition: AdapterRequest | None = Field(None, description="or an inline condition (its first adapter is used)")
    texts: list[str] | None = Field(None, description="inputs of a text suite (a causal LM's: prompts it replies to)")
    images: list[Image] | None = Field(None, description="inputs of an image suite (N, H, W)")


class PredictResponse(BaseModel):
    adapter_id: str
    predictions: list[int] | None = None  # (N,) class ids (classifiers)
    labels: list[str] | None = None  # (N,) class names where the suite has them
    probabilities: list[list[float]] | None = None  # (N, C) softmax of the logits (classifiers)
    completions: list[str] | None = None  # (N,) greedy replies to the texts as chat prompts (causal LMs)
    batch_size: int  # samples in the micro-batch that served this request (the merge baseline: this request's)


def parse(model: type[BaseModel], raw: bytes) -> BaseModel:
    """A body from raw JSON bytes; malformed JSON or a body of the wrong shape raise RequestError (400 / 422)
    saying what was expected and what was found."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"expected a JSON object; found malformed JSON ({e})", 400) from e
    if not isinstance(data, dict):
        raise RequestError(f"expected a JSON object; found a JSON {type(data).__name__}", 422)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestError(describe(e)) from e


def describe(e: ValidationError, most: int = 3) -> str:
    """pydantic's errors as one line: `field: expected …; found …`, the first `most` of them."""
    parts = []
    for err in e.errors()[:most]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        found = err.get("input")
        shown = json.dumps(found)[:60] if isinstance(found, (int, float, str, bool, type(None))) else type(found).__name__
        if err["type"] == "missing":
            parts.append(f"{where}: expected a value; found none")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{where}: expected no such field; found {shown}")
        else:
            parts.append(f"{where}: expected {err['msg'].lower().removeprefix('input should be ')}; found {shown}")
    more = len(e.errors()) - most
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def check_condition(c: ConditionBody, max_text_chars: int, max_examples: int, max_images: int) -> None:
    """Exactly one kind of condition, inside the limits; RequestError otherwise."""
    given = [k for k in ("task", "description", "images", "label") if getattr(c, k) is not None]
    if c.examples is not None and c.description is None:
        raise RequestError("examples: expected them with a description; found examples without one")
    if len(given) != 1:
        raise RequestError(f"condition: expected exactly one of task, description (+ examples), images, label; found "
                           f"{given or 'none'}")
    if c.description is not None and not c.description.strip():
        raise RequestError("description: expected some text; found an empty description")
    texts = [c.description or ""] + [e.text for e in c.examples or []]
    longest = max(len(t) for t in texts)
    if longest > max_text_chars:
        raise RequestError(f"expected texts of at most {max_text_chars} characters; found one of {longest}", 413)
    if c.examples is not None and len(c.examples) > max_examples:
        raise RequestError(f"examples: expected at most {max_examples}; found {len(c.examples)}", 413)
    if c.images is not None and not 1 <= len(c.images) <= max_images:
        raise RequestError(f"images: expected 1 … {max_images} exemplar images; found {len(c.images)}", 413 if c.images else 422)
