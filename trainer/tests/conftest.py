"""A tiny randomly initialised Llama and a word-level tokenizer built here: no download, seconds on CPU."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from nanoresearch_trainer.data import FEEDBACK_TEMPLATE

# One thread: these models are tiny, and on a busy 2-core machine a second thread mostly spins.
torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
TOPICS = [f"t{i}" for i in range(12)]
WORDS = [
    "<pad>",
    "<unk>",
    "<eos>",
    "<|user|>",
    "<|assistant|>",
    "topic",
    *TOPICS,
    "likes",
    "none",
    "alpha",
    "beta",
    "a1",
    "a2",
    "a3",
    "b1",
    "b2",
    "b3",
    "filler",
    *sorted(set(FEEDBACK_TEMPLATE.format(feedback="").split())),
]


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(dict.fromkeys(WORDS))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


@pytest.fixture()
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture()
def tiny(tok) -> LlamaForCausalLM:
    return make_model(len(tok))
