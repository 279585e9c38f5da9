"""Tiny fast tokenizers matching the tiny models of conftest (vocabulary 99), built offline in milliseconds.

Words are `w<i>` for token id i (4..98 for the GPT-2-style one, 5..98 for the BERT-style one), so any text made
of those words tokenises one word per token, with character offsets (needed by question answering).
"""

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertTokenizer, PreTrainedTokenizerFast

VOCAB_SIZE = 99


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3 (the ids of the tiny decoder configs)."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, VOCAB_SIZE)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def bert_tokenizer() -> BertTokenizer:
    """A WordPiece BERT tokenizer: `[PAD]`=0 (the tiny encoder's pad id), `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`.

    (transformers 5: pass `vocab=` a dict; `vocab_file=` is ignored.)
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(len(specials), VOCAB_SIZE)])}
    return BertTokenizer(vocab=vocab)
