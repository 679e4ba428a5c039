"""Fixtures for the RPO tests: small real tokenizers trained in memory (no downloads)."""

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Question: what is 12 + 30?\nAnswer: 42\n",
    "Step 1: add the tens.\nStep 2: add the ones.\n\nThe answer is \\boxed{42}.\n",
    "Let me think.\n12 + 30 = 42.\nSo the result is 42.\n",
]


def make_tokenizer(vocab_size: int = 320):
    """Byte-level BPE (like SmolLM2's) with ChatML specials, trained on a tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer(320)


@pytest.fixture(scope="session")
def other_tokenizer():
    return make_tokenizer(290)
