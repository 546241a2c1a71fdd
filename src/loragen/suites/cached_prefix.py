"""The cached prefix: train the top N decoder layers of a causal LM from the hidden states of its frozen lower layers,
computed once per example.

Why. When LoRA adapts only the top N of a model's decoder layers, the layers below the cut (the prefix: embeddings and
layers 0 … cut − 1, cut = layers − N) are the same for every training step, every task's adapter and every adapter a
generator produces: their output for an example never changes. Computing it once per example and running only the top
N layers, the final norm and the LM head over the positions that predict answer tokens per step gives the same logits,
loss and gradients for a fraction of the cost. Measured on SmolLM2-135M (30 layers), N = 4, LoRA r = 4 on q_proj and
v_proj, batch 8, one thread (docs/llm-adapters.md, benchmarks/llm_cost.py): 0.49 s per step against 2.97 s for LoRA on
every layer through the whole model, and 0.11 s per example, once, for the prefix.

Where it sits. `LlmTasks(top_layers=N).data(task, split)` returns x = the prefix's output, packed with the attention
mask (below), instead of tokens; `LlmTasks.forward(model, x)` sees floating-point x and runs `top_logits` on whatever
model it is given: the base model, the PEFT-wrapped copy `finetune.train_lora` trains, or the base model under
adapters/batched.py's per-sample hooks (the hyper generator). Nothing outside the suite knows:
`F.cross_entropy(suite.forward(model, x), y)` is the same call for tokens and for cached states, and indexing or
concatenating x works as for any suite's data. Scoring by generation (exact match) needs tokens and the whole model,
so the suite keeps the tokens too (`LlmTasks.tokens`).

Packing: x (N, L, D + 2) float32 holds, at each of the L positions (left-padded like the tokens), the hidden state
entering layer `cut`, then the attention mask (1 real token, 0 padding), then 1 where the token is an answer token (a
target of the loss). Position ids are derived from the mask as in completion.answer_logits, so a row gives the same
states whatever it is padded with. The answer flags let the LM head (49k × 576 for SmolLM2, the biggest matrix of the
top layers) run over the answer tokens alone, a few of the A-position window; the other positions of the (N, A, V)
logits are 0, which the loss ignores (their target is IGNORE) and teacher-forced scoring skips.

Validity. Cached states are the model's own only while its prefix is the base model's. `top_logits` refuses a model
whose prefix layers carry PEFT LoRA layers or hooked linear modules (a LoRA layout reaching below the cut); an adapter
merged into prefix weights cannot be seen, which is why scoring on tokens always runs the whole model.

Memory: L × (D + 2) floats per example, 222 kB with SmolLM2 and L = 96; the suite keeps the states of every split it
was asked for (a 53-task zoo's train and val splits: about 0.95 GB).

The attention mask is built here as an additive float mask (0 attend, the dtype's minimum not): causal, and no token
attends to padding. A padding query then attends to nothing, which with the minimum instead of −inf gives finite
(uniform) weights, as transformers' eager path does; no real token ever reads its output. It is written out rather
than taken from transformers' `create_causal_mask`, whose signature changes between versions, while a decoder layer's
call (hidden states, attention_mask, position_ids, position_embeddings) is the same for Llama, Qwen2 and Mistral.

Shapes: N examples, L tokens, D hidden size, A answer positions, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loragen.errors import ConfigError, LayoutMismatchError
from loragen.suites.completion import IGNORE

DECODER_PARTS = ("embed_tokens", "layers", "norm", "rotary_emb")  # what the inner model of a Llama-style LM holds


@dataclass(frozen=True)
class DecoderParts:
    """The pieces of a Llama-style causal LM that a forward pass runs through, in order."""

    embed: nn.Module  # token ids (N, L) -> (N, L, D)
    layers: nn.ModuleList  # the decoder layers, bottom first
    norm: nn.Module  # final norm before the LM head
    rotary: nn.Module  # (hidden, position ids) -> the rotary (cos, sin) every layer uses
    head: nn.Module  # LM head (D -> V)


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The decoder parts of a *ForCausalLM model (Llama, Qwen2, Mistral, ...), seen through a PEFT wrapper."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner, head = getattr(core, "model", None), getattr(core, "lm_head", None)
    missing = [n for n in DECODER_PARTS if not hasattr(inner, n)] if inner is not None else list(DECODER_PARTS)
    if missing or head is None:
        raise ConfigError(f"expected a Llama-style causal LM (.model with {', '.join(DECODER_PARTS)}, and .lm_head); found "
                          f"{type(core).__name__} without {missing + ([] if head is not None else ['lm_head'])}")
    return DecoderParts(inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb, head)


def cut_layer(model: nn.Module, top_layers: int) -> int:
    """The first adapted layer: the model's number of decoder layers minus `top_layers` (which must fit)."""
    n = len(decoder_parts(model).layers)
    if not 1 <= top_layers <= n:
        raise ConfigError(f"top_layers must be between 1 and the model's {n} decoder layers; found {top_layers}")
    return n - top_layers


def attention_bias(mask_NL: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, 1, L, L) additive mask: 0 where query i may read key j (j ≤ i and j a real token), the dtype's minimum
    elsewhere."""
    length = mask_NL.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask_NL.device).tril()
    allowed = causal[None] & mask_NL[:, None, :].bool()  # (N, L, L)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=mask_NL.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def run_layers(parts: DecoderParts, h_NLD: torch.Tensor, mask_NL: torch.Tensor, layers) -> torch.Tensor:
    """(N, L, D) hidden states through `layers` (a slice of parts.layers), with the rows' own positions."""
    positions = (mask_NL.long().cumsum(1) - 1).clamp_min(0)  # (N, L): real tokens count from 0 whatever the padding
    rotary = parts.rotary(h_NLD, positions)
    bias = attention_bias(mask_NL, h_NLD.dtype)
    for layer in layers:
        out = layer(h_NLD, attention_mask=bias, position_ids=positions, position_embeddings=rotary)
        h_NLD = out[0] if isinstance(out, tuple) else out  # older transformers return (hidden, ...)
    return h_NLD


def _first_column(mask_NL: torch.Tensor) -> int:
    """The first column holding a real token in any row: columns before it are padding only and can be dropped."""
    return int(mask_NL.bool().any(0).long().argmax())


@torch.no_grad()
def prefix_states(model: nn.Module, x_N2L: torch.Tensor, y_NA: torch.Tensor, cut: int, batch: int = 16) -> torch.Tensor:
    """Token rows (N, 2, L) (ids, attention mask) and their answer targets (N, A) -> (N, L, D + 2): the state entering
    layer `cut` at each position (zeros at padding), the attention mask, and the answer-token flags."""
    parts = decoder_parts(model)
    if not 0 <= cut < len(parts.layers):
        raise ConfigError(f"the cut must be a layer of the model (0 to {len(parts.layers) - 1}); found {cut}")
    dim, answer = parts.embed.embedding_dim, y_NA.shape[1]
    out = torch.zeros(x_N2L.shape[0], x_N2L.shape[2], dim + 2)
    out[..., dim] = x_N2L[:, 1].float()
    out[:, -answer:, dim + 1] = (y_NA != IGNORE).float()  # answers are right-aligned in the last A columns
    for i in range(0, len(x_N2L), batch):
        ids, mask = x_N2L[i : i + batch, 0], x_N2L[i : i + batch, 1]
        first = _first_column(mask)
        h = run_layers(parts, parts.embed(ids[:, first:]), mask[:, first:], parts.layers[:cut])  # (n, L - first, D)
        out[i : i + batch, first:, :dim] = h * mask[:, first:, None]
    return out


def check_prefix_untouched(parts: DecoderParts, cut: int) -> None:
    """Raise unless layers 0 … cut − 1 are the base model's own: no PEFT LoRA layer and no forward hook on a linear
    module (how adapters/batched.py applies adapters; transformers' own output-capturing hooks sit on layers)."""
    for i, layer in enumerate(parts.layers[:cut]):
        for name, module in layer.named_modules():
            hooked = isinstance(module, nn.Linear) and bool(module._forward_hooks or module._forward_pre_hooks)
            if hasattr(module, "lora_A") or hooked:
                raise LayoutMismatchError(
                    f"cached prefix states hold the base model's layers 0-{cut - 1}; found an adapter on layer {i} "
                    f"({name or 'the layer itself'}). Adapt only the top layers, or use LlmTasks(top_layers=None)")


def top_logits(model: nn.Module, x_NLC: torch.Tensor, cut: int, answer_tokens: int) -> torch.Tensor:
    """Packed prefix states (N, L, D + 2) -> (N, A, V) logits predicting the last A tokens of each row: layers cut … end,
    the final norm and the LM head, the head only where the predicted token is an answer token (0 elsewhere)."""
    parts = decoder_parts(model)
    dim = parts.embed.embedding_dim
    if x_NLC.ndim != 3 or x_NLC.shape[2] != dim + 2:
        raise ConfigError(f"expected packed prefix states (N, L, {dim + 2}) for a model of hidden size {dim}; found "
                          f"{tuple(x_NLC.shape)}")
    check_prefix_untouched(parts, cut)
    mask, answer = x_NLC[..., dim], x_NLC[:, -answer_tokens:, dim + 1].bool()  # (N, L), (N, A)
    first = _first_column(mask)
    h, mask = x_NLC[:, first:, :dim], mask[:, first:]
    if h.shape[1] <= answer_tokens:
        raise ConfigError(f"expected rows longer than the answer window ({answer_tokens}); found {h.shape[1]} tokens")
    h = run_layers(parts, h, mask, parts.layers[cut:])  # (N, L', D)
    # position t predicts token t + 1: the A positions before the last predict the last A tokens
    h = parts.norm(h[:, -answer_tokens - 1 : -1][answer])  # (K, D): the K positions whose next token is an answer's
    logits = parts.head(h)  # (K, V)
    out = logits.new_zeros(answer.shape + logits.shape[-1:])  # (N, A, V)
    out[answer] = logits
    return out
