"""A tiny random Llama with a tokenizer trained in-process, saved with save_pretrained.

Shared by the corpus tests (local and Ray engines): a folder that
``ess_widgets.load`` and every Ray actor can load offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

CONTEXT = 48
TRAINING_TEXTS = [
    "The cat sat on the mat. The dog ran in the park!",
    "Hello world.\nThis is a short text, with a comma.",
    "Where is the river? It runs past the old mill.\nThe end.",
] * 10


def tiny_llama_folder(path: Path) -> Path:
    """Save a 2-layer, 2-head Llama (context 48) and a byte-level BPE tokenizer to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=160,
        special_tokens=["[UNK]", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TRAINING_TEXTS, trainer)
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>"
    )
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
    )
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


CORPUS = [
    "The cat sat on the mat. The dog ran in the park!",
    "Hello world.\nThis is a short text, with a comma.",
    "",  # empty: a failure
    "Where is the river? It runs past the old mill.",
    "the " * 60,  # longer than the context: a failure
    [5, 6, 7, 8, 9, 10, 11],  # token ids
    "A dog. A cat. A mat.\nThe end.",
]
