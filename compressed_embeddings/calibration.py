"""A short pass over generic text that tells a compression method which errors matter.

Three statistics, all task-agnostic and cheap (one forward pass over a few thousand tokens, no training):

- token counts: frequent tokens are looked up most often, so their rows deserve more bits;
- the mean predicted probability of each token: an error in a tied head's row of token `v` costs (to second order
  in the KL divergence of the next-token distribution) in proportion to `p_v`, so likely tokens deserve more bits;
- the second moment `E[h h^T]` of the hidden states entering the output head: an error `delta` in a tied head's row
  changes that token's logit by `h . delta`, whose mean square is `delta^T E[h h^T] delta`. Measuring the error in
  that metric (instead of plain Euclidean or cosine) is what keeps perplexity close to the original.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from .evaluation import DOCUMENT_SEPARATOR, _as_text_list, _model_device, token_frequencies

logger = logging.get_logger(__name__)


@dataclass
class CalibrationStats:
    """Statistics of a model on calibration text (see [`collect_calibration`]).

    Attributes:
        token_counts (`torch.Tensor`): int64 `(V,)`, occurrences of each token id in the texts.
        output_second_moment (`torch.Tensor` or `None`): float64 `(d, d)`, `E[h h^T]` over the hidden states that
            entered the output head; `None` for a model without one.
        num_tokens (`int`): hidden states the moment was averaged over.
        output_probability (`torch.Tensor` or `None`): float64 `(V,)`, the model's next-token distribution averaged
            over the same positions (sums to 1); `None` for a model without an output head.
        output_inputs (`torch.Tensor` or `None`): float32 `(n, d)`, a random sample of those hidden states (for
            fitting to the original logits, `kl_steps`); `None` when not kept.
    """

    token_counts: torch.Tensor
    output_second_moment: torch.Tensor | None
    num_tokens: int
    output_probability: torch.Tensor | None = None
    output_inputs: torch.Tensor | None = None


def _first_tokens(tokenizer: Any, texts: list[str], max_tokens: int, seed: int = 0) -> list[int]:
    """The first `max_tokens` tokens of the texts joined in a seeded random order (so that a list that runs through
    one source after another is sampled across all of them), tokenizing only as many documents as needed."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    texts = [texts[i] for i in order]
    count = 1
    while True:  # double the number of documents until the joined prefix holds enough tokens
        ids = tokenizer(DOCUMENT_SEPARATOR.join(texts[:count]))["input_ids"]
        if len(ids) >= max_tokens or count >= len(texts):
            return ids[:max_tokens]
        count *= 2


@torch.no_grad()
def collect_calibration(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    *,
    max_tokens: int = 16384,
    max_length: int = 512,
    batch_size: int = 4,
    keep_hidden_states: int = 8192,
    show_progress: bool = True,
) -> CalibrationStats:
    """Count tokens over all `texts`; average `h h^T` of the output head's inputs and the predicted next-token
    distribution over their first `max_tokens`.

    The documents, in a seeded random order, are joined with `DOCUMENT_SEPARATOR`, tokenized (only as many as
    `max_tokens` needs) and cut into independent windows of `max_length` tokens. A random `keep_hidden_states` of
    the head's input states are kept (`output_inputs`, for `kl_steps`). Run it on the original (uncompressed) model.

    Example:

    ```python
    >>> from compressed_embeddings import collect_calibration  # doctest: +SKIP
    >>> stats = collect_calibration(model, tokenizer, ["Some generic English text ..."])  # doctest: +SKIP
    >>> config = CompressedEmbeddingConfig.preset("transform_coding")  # doctest: +SKIP
    >>> model = compress_model(model, config, calibration=stats)  # doctest: +SKIP
    ```
    """
    texts = _as_text_list(texts)
    if max_tokens < 1 or max_length < 1 or batch_size < 1:
        raise ValueError("max_tokens, max_length and batch_size must be positive integers.")
    vocab = model.get_input_embeddings().weight.shape[0]
    counts = token_frequencies(tokenizer, texts, vocab, show_progress=show_progress)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        logger.info("The model has no output head: calibration collects token counts only.")
        return CalibrationStats(counts, None, 0)
    ids = _first_tokens(tokenizer, texts, max_tokens)
    max_length = _window_length(model, max_length)
    windows = [ids[start : start + max_length] for start in range(0, len(ids), max_length)]
    if not windows:
        raise ValueError("The calibration texts are empty after tokenization; give some text.")
    moment, probability, seen, hidden = _head_statistics(model, head, windows, batch_size, show_progress)
    keep = torch.randperm(hidden.shape[0], generator=torch.Generator().manual_seed(0))[:keep_hidden_states]
    return CalibrationStats(counts, moment, seen, probability, hidden[keep.sort().values] if keep.numel() else None)


@torch.no_grad()
def random_token_calibration(
    model: torch.nn.Module, *, num_tokens: int = 2048, max_length: int = 512, seed: int = 0, batch_size: int = 4
) -> CalibrationStats:
    """Calibration without any text: `E[h h^T]` of the output head's inputs over windows of uniformly random token
    ids. The hidden states of a language model keep their dominant directions whatever the input, so this estimate
    of the head's metric is far better than none (see the quality results); token counts and the predicted
    distribution stay unmeasured (zero counts, `output_probability=None`). `compress_model` uses it for
    `transform_coding` with a tied head when no calibration is given.

    Example:

    ```python
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    >>> stats = random_token_calibration(model, num_tokens=64, max_length=32)
    >>> stats.output_second_moment.shape, stats.num_tokens
    (torch.Size([32, 32]), 64)
    ```
    """
    if num_tokens < 1 or max_length < 1 or batch_size < 1:
        raise ValueError("num_tokens, max_length and batch_size must be positive integers.")
    vocab = model.get_input_embeddings().weight.shape[0]
    counts = torch.zeros(vocab, dtype=torch.int64)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return CalibrationStats(counts, None, 0)
    ids = torch.randint(0, vocab, (num_tokens,), generator=torch.Generator().manual_seed(seed)).tolist()
    max_length = _window_length(model, max_length)
    windows = [ids[start : start + max_length] for start in range(0, num_tokens, max_length)]
    moment, _, seen, _ = _head_statistics(model, head, windows, batch_size, show_progress=False)
    return CalibrationStats(counts, moment, seen)


def _window_length(model: torch.nn.Module, max_length: int) -> int:
    """`max_length`, capped at the positions the model has (e.g. BERT's 512, or fewer in a small config; RoBERTa's
    positions start after its padding index, 514 positions hold 512 tokens)."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not (isinstance(positions, int) and positions > 0):
        return max_length
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    if hasattr(embeddings, "create_position_ids_from_input_ids"):  # RoBERTa-style positions: padding_idx + 1 on
        positions -= embeddings.padding_idx + 1
    return max(1, min(max_length, positions))


@torch.no_grad()
def _head_statistics(
    model: torch.nn.Module, head: torch.nn.Module, windows: list[list[int]], batch_size: int, show_progress: bool
) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """`E[h h^T]` of the head's inputs, the mean predicted next-token distribution, the positions seen and their
    hidden states (float32), over independent windows of token ids."""
    vocab, d = model.get_input_embeddings().weight.shape
    moment = torch.zeros(d, d, dtype=torch.float64)
    probability = torch.zeros(vocab, dtype=torch.float64)
    seen = 0
    states = []

    def accumulate(module, inputs, output):
        nonlocal moment, probability, seen
        hidden = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double().cpu()
        states.append(hidden.float())
        moment += hidden.T @ hidden
        seen += hidden.shape[0]
        for logits in output.detach().reshape(-1, output.shape[-1]).split(512):  # softmax a slice at a time
            probability += logits.float().softmax(-1).sum(0)[:vocab].double().cpu()

    device = _model_device(model)
    handle = head.register_forward_hook(accumulate)
    was_training = model.training
    model.eval()
    try:
        # equal-length windows batch together; the shorter last one runs alone
        max_length = len(windows[0])
        full = [w for w in windows if len(w) == max_length]
        batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
        batches += [[w] for w in windows if len(w) != max_length]
        for batch in tqdm(batches, desc="calibration", disable=not show_progress):
            model(input_ids=torch.tensor(batch, device=device))
    finally:
        handle.remove()
        model.train(was_training)
    return moment / max(seen, 1), probability / max(seen, 1), seen, torch.cat(states)
