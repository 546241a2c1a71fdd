"""InputCodec: a suite's inputs as JSON (texts, chat prompts or (H, W) images) -> a model batch, checked before it is
queued, so that a malformed input fails its own request and never a micro-batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from loragen.errors import RequestError
from loragen.suites import completion

CODECS = ("digits-domains", "text-topics", "llm-tasks")  # suites whose inputs the service takes
# texts per forward pass of a micro-batch, sorted by length: a pass over texts padded to a common length costs about
# their count times that length, and chat lines are ~10 tokens while some reach MAX_LEN (24), so a batch padded to its
# longest spends half its compute on padding. MiniLM, 1 thread, 56 test texts: 303 ms in one pass, 159 ms in chunks
# of 16 (8: 162, 32: 186)
TEXT_CHUNK = 16


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
    replies to; the last two come as `texts`), `batch` that checks one request's inputs and encodes them ((N, H, W)
    images, (N, 2, L) token ids and mask, or N prompts' chat-template token ids), and `collate` that joins requests'
    inputs into one model batch (prompts: left-padded to the longest)."""

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

    def batch(self, texts: list[str] | None, images: list | None, max_inputs: int, max_text_chars: int
              ) -> torch.Tensor | list[list[int]]:
        """One request's N inputs, encoded."""
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
            return self.suite.encode_texts(texts, longest=True)  # (N, 2, L): padded to the request's longest only
        return completion.prompt_ids(self.suite.tokenizer(), [[{"role": "user", "content": t}] for t in texts])

    def collate(self, xs: list) -> torch.Tensor:
        """One model batch (B, ...) of several requests' encoded inputs (texts: right-padded to the longest)."""
        if self.kind == "images":
            return torch.cat(xs)
        if self.kind == "texts":
            longest = max(x.shape[-1] for x in xs)
            return torch.cat([F.pad(x, (0, longest - x.shape[-1])) for x in xs])  # (B, 2, L); padding: id 0, mask 0
        return completion.left_pad([p for x in xs for p in x], completion.pad_id(self.suite.tokenizer()))  # (B, 2, L)

    def passes(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A model batch (B, ...) as the (sample indices, inputs) of its forward passes: texts sorted by length and cut
        into chunks of at most TEXT_CHUNK, each trimmed to its own longest text; images and prompts in one pass."""
        if self.kind != "texts":
            return [(torch.arange(len(x)), x)]
        lengths = x[:, 1].sum(1)  # (B,) tokens of each text
        return [(idx, x[idx, :, : int(lengths[idx].max())]) for idx in lengths.argsort(stable=True).split(TEXT_CHUNK)]
