"""Chat queries to a causal LM and how its answers are scored: exact match of the greedy completion, and the loss on
answer tokens only.

A query is a list of chat messages ending with the user's; its answer is the assistant's reply. Tokens: the prompt is
the chat template with the generation prompt; the answer is the reply's text followed by the template's end-of-turn
marker (e.g. '<|im_end|>'), tokenised on its own and appended. Training therefore sees exactly the tokens that greedy
decoding has to produce, end of turn included.

Batches are left-padded, so every answer ends at the last column: the logits that predict answer tokens are the last
A + 1 positions (`logits_to_keep`), and the 49k-vocabulary head never runs over the prompt, where it would dominate
the cost. Position ids count real tokens only, so a padded row gives the logits of the row alone.

Exact match: the greedy completion, cut at the end of turn and stripped of surrounding whitespace, is the answer.
Scoring it takes one forward pass with the answer fed in (teacher forcing), and generation for the few rows that pass
cannot settle. Where the argmax at every answer position is the answer's token, greedy decoding reproduces the answer
and ends the turn: a match. Otherwise greedy decoding follows the answer up to the first differing position and emits
the argmax there; when that text already ends the turn or strays from the answer's text, the row is settled too. Only
rows whose text is still a prefix of the answer are generated: a model may spell the answer with other tokens than
the tokenizer's ('R'+'AB'+'B'+'IT' for 'RABBIT', seen with SmolLM2 prompted zero-shot), and counting those as wrong
would penalise prompting baselines for a tokenisation detail. `token_matches` alone (the first pass) is a lower bound,
fast enough to pick checkpoints during training.

Shapes: N queries, L tokens (prompt + answer, left-padded), A answer positions (a fixed window: answers are
right-aligned in it and the rest is IGNORE), V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loragen.errors import ConfigError
from loragen.suites.suite import TaskData

IGNORE = -100  # target id of positions without an answer token (F.cross_entropy's default ignore_index)
PROBE = "\x00answer\x00"  # a reply no real answer contains: finds the end-of-turn text in a chat template


def end_of_turn(tokenizer) -> str:
    """The text the chat template puts after an assistant's reply, trailing whitespace removed ('<|im_end|>')."""
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": PROBE}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    if PROBE not in text:
        raise ConfigError(f"expected the chat template to copy the assistant's reply into the prompt; found {text[-200:]!r}")
    end = text.split(PROBE, 1)[1].rstrip()
    if not end:
        raise ConfigError("expected the chat template to end an assistant turn with a marker (e.g. <|im_end|>); found none")
    return end


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The chat template of `messages` with the assistant's turn opened."""
    if not messages or messages[-1]["role"] != "user":
        raise ConfigError(f"expected chat messages ending with the user's; found roles {[m['role'] for m in messages]}")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("expected the tokenizer to have a pad or end-of-sequence token; found neither")
    return pad


def encode(tokenizer, queries: list[list[dict]], answers: list[str], answer_tokens: int,
           length: int | None = None) -> TaskData:
    """Queries and their answers -> TaskData: x (N, 2, L) input ids and attention mask, left-padded to `length` (None:
    the longest); y (N, A = answer_tokens) the answer's tokens and the end of turn, right-aligned, IGNORE elsewhere."""
    if len(queries) != len(answers):
        raise ConfigError(f"expected one answer per query; found {len(queries)} queries and {len(answers)} answers")
    end = end_of_turn(tokenizer)
    rows, targets = [], []
    for msgs, answer in zip(queries, answers):
        prompt = tokenizer(prompt_text(tokenizer, msgs), add_special_tokens=False)["input_ids"]
        reply = tokenizer(answer + end, add_special_tokens=False)["input_ids"]
        if len(reply) > answer_tokens:
            raise ConfigError(f"expected answers of at most {answer_tokens} tokens with the end of turn; found "
                              f"{len(reply)} for {answer!r} (raise the answer window)")
        rows.append(prompt + reply)
        targets.append(reply)
    width = max(map(len, rows)) if length is None else length
    if max(map(len, rows)) > width:
        raise ConfigError(f"expected prompts + answers of at most {width} tokens; found {max(map(len, rows))} (raise the "
                          f"token budget)")
    x = torch.full((len(rows), 2, width), pad_id(tokenizer), dtype=torch.long)
    x[:, 1] = 0
    y = torch.full((len(rows), answer_tokens), IGNORE, dtype=torch.long)
    for i, (row, reply) in enumerate(zip(rows, targets)):
        x[i, 0, width - len(row) :] = torch.tensor(row)
        x[i, 1, width - len(row) :] = 1
        y[i, answer_tokens - len(reply) :] = torch.tensor(reply)
    return TaskData(x, y)


def answer_logits(model: nn.Module, x_N2L: torch.Tensor, answer_tokens: int) -> torch.Tensor:
    """(N, A, V) logits predicting the last A tokens of each left-padded row (columns of padding only are dropped)."""
    ids, mask = x_N2L[:, 0], x_N2L[:, 1]
    first = int(mask.any(0).long().argmax())  # the first column with a real token in any row
    ids, mask = ids[:, first:], mask[:, first:]
    if ids.shape[1] <= answer_tokens:
        raise ConfigError(f"expected rows longer than the answer window ({answer_tokens}); found {ids.shape[1]} tokens")
    positions = (mask.cumsum(1) - 1).clamp_min(0)  # (N, L): real tokens count from 0 whatever the padding
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=answer_tokens + 1)
    return out.logits[:, :-1]  # position t predicts token t + 1: the last A + 1 positions predict the last A tokens


@torch.no_grad()
def answer_loss(model: nn.Module, data: TaskData, batch: int = 16) -> float:
    """Mean cross-entropy per answer token over all of `data` (every answer token weighs the same)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data.y), batch):
        y = data.y[i : i + batch]
        logits = answer_logits(model, data.x[i : i + batch], y.shape[1])
        total += F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="sum").item()
        count += (y != IGNORE).sum().item()
    return total / count


@torch.no_grad()
def greedy_tokens(model: nn.Module, data: TaskData, batch: int = 16, logits=None) -> torch.Tensor:
    """(N, A) the argmax token at every answer position with the answer fed in (teacher forcing). `logits(model, x,
    A)` -> (n, A, V): default `answer_logits` on tokens; a suite passes its own for cached prefix states."""
    model.eval()
    logits = logits or answer_logits
    return torch.cat([logits(model, data.x[i : i + batch], data.y.shape[1]).argmax(-1) for i in range(0, len(data.y), batch)])


def token_matches(model: nn.Module, data: TaskData, batch: int = 16, logits=None) -> torch.Tensor:
    """(N,) bool: every answer position's argmax is the answer's token (teacher forcing), so the greedy completion is
    the answer's tokens followed by the end of turn (`logits` as in greedy_tokens)."""
    pred = greedy_tokens(model, data, batch, logits)
    return ((pred == data.y) | (data.y == IGNORE)).all(1)


def _settled(tokenizer, end: str, target: list[int], pred: list[int], answer: str) -> bool | None:
    """Whether a greedy completion is the answer, from teacher forcing alone, or None when only generating it can tell.
    Greedy decoding follows the answer's tokens up to the first position j where the argmax differs, then emits
    pred[j]: if the text so far already ends the turn, or already strays from the answer's text, the completion is
    settled without generating; otherwise the model may be spelling the answer with other tokens."""
    j = next((i for i, (t, p) in enumerate(zip(target, pred)) if t != p), None)
    if j is None:
        return True
    text = tokenizer.decode(target[:j] + [pred[j]], skip_special_tokens=False)
    if end in text:
        return text.split(end, 1)[0].strip() == answer.strip()
    if "\ufffd" in text:  # a character cut between byte tokens: its text is not known yet
        return None
    so_far, want = text.lstrip(), answer.strip()
    return None if want.startswith(so_far) or so_far.strip() == want else False


@torch.no_grad()
def exact_matches(model: nn.Module, tokenizer, data: TaskData, answers: list[str], batch: int = 16,
                  extra_tokens: int = 4, teacher: TaskData | None = None, logits=None) -> torch.Tensor:
    """(N,) bool: the greedy completion of each query is its answer (string comparison, whitespace stripped). One
    teacher-forced pass settles most rows (`_settled`); the rest are generated from `data`'s tokens, with
    `extra_tokens` beyond the answer window (a different spelling may take more tokens). `teacher` (default `data`)
    and `logits` say what the teacher-forced pass runs on: the suite's cached prefix states and their logits, which
    must come from the same rows."""
    if len(answers) != len(data.y):
        raise ConfigError(f"expected one answer per row of data; found {len(answers)} answers and {len(data.y)} rows")
    teacher = teacher if teacher is not None else data
    if not torch.equal(teacher.y, data.y):
        raise ConfigError("expected the teacher-forced rows to be the same rows as the tokens (their answers differ)")
    pred = greedy_tokens(model, teacher, batch, logits)
    end = end_of_turn(tokenizer)
    hits = torch.zeros(len(answers), dtype=torch.bool)
    todo = []
    for i, answer in enumerate(answers):
        keep = data.y[i] != IGNORE
        settled = _settled(tokenizer, end, data.y[i][keep].tolist(), pred[i][keep].tolist(), answer)
        if settled is None:
            todo.append(i)
        else:
            hits[i] = settled
    if todo:
        prompts = []
        for i in todo:  # a row's prompt: its real tokens without the answer's
            real = data.x[i, 0][data.x[i, 1].bool()]
            prompts.append(real[: len(real) - int((data.y[i] != IGNORE).sum())].tolist())
        replies = _greedy(model, tokenizer, prompts, data.y.shape[1] + extra_tokens, batch)
        for i, reply in zip(todo, replies):
            hits[i] = reply == answers[i].strip()
    return hits


def greedy_complete(model: nn.Module, tokenizer, queries: list[list[dict]], max_new_tokens: int = 16,
                    batch: int = 8) -> list[str]:
    """The model's greedy replies to chat queries, cut at the end of turn and stripped of surrounding whitespace."""
    return _greedy(model, tokenizer, prompt_ids(tokenizer, queries), max_new_tokens, batch)


def prompt_ids(tokenizer, queries: list[list[dict]]) -> list[list[int]]:
    """The token ids of each query's chat template, the assistant's turn opened."""
    return [tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"] for q in queries]


def left_pad(prompts: list[list[int]], pad: int) -> torch.Tensor:
    """(N, 2, L) token ids and attention mask of tokenised prompts, left-padded to the longest."""
    width = max(map(len, prompts))
    x = torch.zeros((len(prompts), 2, width), dtype=torch.long)
    x[:, 0] = pad
    for j, p in enumerate(prompts):
        x[j, 0, width - len(p) :], x[j, 1, width - len(p) :] = torch.tensor(p), 1
    return x


@torch.no_grad()
def greedy_replies(model: nn.Module, tokenizer, x_N2L: torch.Tensor, max_new_tokens: int) -> list[str]:
    """Greedy replies to left-padded prompts (ids and mask, as `left_pad` makes them), generated with the KV cache,
    cut at the end of turn and stripped. The batch order is kept (no beams), so per-sample LoRA hooks apply."""
    from transformers import GenerationConfig

    model.eval()
    end = end_of_turn(tokenizer)
    stop = tokenizer(end, add_special_tokens=False)["input_ids"][0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                              pad_token_id=pad_id(tokenizer))
    width = x_N2L.shape[-1]
    new = model.generate(input_ids=x_N2L[:, 0], attention_mask=x_N2L[:, 1], generation_config=config)[:, width:]
    return [tokenizer.decode(row, skip_special_tokens=False).split(end, 1)[0].strip() for row in new.tolist()]


def _greedy(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch: int) -> list[str]:
    """Greedy replies to tokenised prompts, generated in left-padded batches."""
    return [reply for i in range(0, len(prompts), batch)
            for reply in greedy_replies(model, tokenizer, left_pad(prompts[i : i + batch], pad_id(tokenizer)), max_new_tokens)]
