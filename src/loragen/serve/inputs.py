"""InputCodec: a suite's inputs as JSON (texts, chat prompts or (H, W) images) -> a model batch, checked before it is
queued, so that a malformed input fails its own request and never a micro-batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loragen.errors import RequestError
from loragen.suites import completion

CODECS = ("digits-domains", "text-topics", "llm-tasks")  # suites whose inputs the service takes


def images_tensor(images: list, size: tuple[int, int], what: str) -> torch.Tensor:
    """(N, H, W) float32 from nested lists; the shape must be (N, *size) and every value finite."""
    try:
        x = torch.tensor(images, dtype=torch.float32)
    except (ValueError, TypeError) as e:
        raise RequestError(f"{what}: expected a list of {size[0]}×{size[1]} images (rows of equal length); found ragged "
                           f"or non-numeric rows ({e})") from e
    if x.ndim != 3 or tuple(x.shape[1:]) != size:
        raise RequestError(f"{what}: expected shape (N, {size[0]}, {size[1]}); found {tuple(x.shape)}")
    bad = ~torch.isfinite(x)
    if bad.any():
        raise RequestError(f"{what}: expected finite pixel values; found {int(bad.sum())} NaN/Inf of {x.numel()}")
    return x


class InputCodec:
    """How one suite's inputs arrive over HTTP: `kind` ("images", "texts" to classify, or "prompts" a causal LM
    replies to; the last two come as `texts`), and `batch` that turns them into a model batch: (N, H, W) images, or
    (N, 2, L) token ids and mask (prompts: the chat template, left-padded); `collate` joins requests' batches."""

    def __init__(self, suite):
        if suite.name not in CODECS:
            raise RequestError(f"predict: expected a generator of one of {CODECS}; found one of {suite.name!r}", 501)
        self.suite = suite
        if suite.name == "digits-domains":
            from loragen.suites.digits_domains import SIZE

            self.kind, self.image_size, self.labels = "images", (SIZE, SIZE), None
        elif suite.name == "llm-tasks":
            self.kind, self.image_size, self.labels = "prompts", None, None
        else:
            from loragen.suites.text_topics import LABELS

            self.kind, self.image_size = "texts", None
            self.labels = [name for name, _ in sorted(LABELS.items(), key=lambda kv: kv[1])]  # class id -> name

    def batch(self, texts: list[str] | None, images: list | None, max_inputs: int, max_text_chars: int) -> torch.Tensor:
        """(N, ...) model inputs of one request."""
        field = "images" if self.kind == "images" else "texts"
        given, other = (images, texts) if field == "images" else (texts, images)
        if other is not None:
            wrong = "texts" if field == "images" else "images"
            raise RequestError(f"{wrong}: expected {field} for a {self.suite.name} generator; found {wrong}")
        if not given:
            raise RequestError(f"{field}: expected 1 … {max_inputs} inputs; found {'none' if given is None else 0}")
        if len(given) > max_inputs:
            raise RequestError(f"{field}: expected at most {max_inputs} inputs; found {len(given)}", 413)
        if self.kind == "images":
            return images_tensor(images, self.image_size, "images")
        longest = max(len(t) for t in texts)
        if longest > max_text_chars:
            raise RequestError(f"texts: expected at most {max_text_chars} characters each; found one of {longest}", 413)
        if self.kind == "texts":
            return self.suite.encode_texts(texts)
        tok = self.suite.tokenizer()
        prompts = [tok(completion.prompt_text(tok, [{"role": "user", "content": t}]), add_special_tokens=False)["input_ids"]
                   for t in texts]
        return completion.left_pad(prompts, completion.pad_id(tok))

    def collate(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """One batch of several requests' (prompts: left-padded again to the longest)."""
        if self.kind != "prompts":
            return torch.cat(xs)
        width, pad = max(x.shape[-1] for x in xs), completion.pad_id(self.suite.tokenizer())
        ids = torch.cat([F.pad(x[:, 0], (width - x.shape[-1], 0), value=pad) for x in xs])  # (B, L)
        mask = torch.cat([F.pad(x[:, 1], (width - x.shape[-1], 0)) for x in xs])  # (B, L)
        return torch.stack([ids, mask], 1)
