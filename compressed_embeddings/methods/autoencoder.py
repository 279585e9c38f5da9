"""The paper's AutoEncoder, trained on the rows of E with the direction-aware loss.

"Direction is what you need" (Bałazy et al., RepL4NLP 2021): encoder `Linear(d, k)`, decoder `Linear(k, d)`
(or a small MLP), loss `0.1995 * mean(1 - cos) + 0.0025 * mean((|x_hat - x| + 1e-10) ** p)` with `p`
decaying linearly from 1.0 to 0.1 over 20 epochs, Adam (lr 1e-3), StepLR (4 epochs, x0.5), batches of 32
shuffled rows, 30 epochs. After training the encoder is thrown away: the codes are its outputs.
"""

import dataclasses
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from ..configuration import CompressedEmbeddingConfig
from ..layer import build_decoder
from ..losses import direction_loss, l1_power
from . import MethodOutput, register_method
from .svd import svd as svd_method

CHUNK_ROWS = 16384
# Below this many entries per batch, intra-op threads cost more than they give (10x slower on 2 CPUs for the
# paper's 32 x 768 batches), so training runs on one thread.
SMALL_BATCH_ENTRIES = 1 << 18


def _svd_init(matrix: torch.Tensor, config: CompressedEmbeddingConfig, encoder: nn.Linear, decoder: nn.Module) -> None:
    if not isinstance(decoder, nn.Linear):
        raise ValueError("init='svd' needs a linear decoder; leave decoder_hidden_dims empty or use init='random'.")
    svd_config = dataclasses.replace(config, method="svd", decoder_bias=config.use_decoder_bias)
    start = svd_method(matrix, svd_config, show_progress=False).decoder_state
    basis = start["weight"]  # d x k
    mean = start.get("bias", torch.zeros(matrix.shape[1]))
    with torch.no_grad():
        encoder.weight.copy_(basis.T)
        encoder.bias.copy_(-(basis.T @ mean))
        decoder.weight.copy_(basis)
        if decoder.bias is not None:
            decoder.bias.copy_(mean)


@register_method("autoencoder")
def autoencoder(
    matrix: torch.Tensor, config: CompressedEmbeddingConfig, *, show_progress: bool = True
) -> MethodOutput:
    """Train the paper's AutoEncoder on the rows of `matrix`; return the codes and the decoder."""
    num_rows, d = matrix.shape
    k = config.code_dim
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = nn.Linear(d, k)
        decoder = build_decoder(k, d, config.decoder_hidden_dims, config.decoder_activation, config.use_decoder_bias)
    if config.init == "svd":
        _svd_init(matrix, config, encoder, decoder)
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    total_steps = config.max_steps or config.epochs * math.ceil(num_rows / config.batch_size)
    threads = torch.get_num_threads()
    if config.batch_size * d <= SMALL_BATCH_ENTRIES:
        torch.set_num_threads(1)
    try:
        history = _train(matrix, config, encoder, decoder, optimizer, generator, total_steps, show_progress)
    finally:
        torch.set_num_threads(threads)

    codes = torch.empty(num_rows, k, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, num_rows, CHUNK_ROWS):
            codes[start : start + CHUNK_ROWS] = encoder(matrix[start : start + CHUNK_ROWS])
    state = {name: tensor.detach().clone() for name, tensor in decoder.state_dict().items()}
    return MethodOutput(codes=codes, decoder_state=state, loss_history=history)


def _train(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    encoder: nn.Module,
    decoder: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    total_steps: int,
    show_progress: bool,
) -> list[float]:
    """The training loop; returns the mean loss of each epoch."""
    num_rows = matrix.shape[0]
    steps_per_epoch = math.ceil(num_rows / config.batch_size)
    epochs = math.ceil(total_steps / steps_per_epoch)
    history: list[float] = []
    step = 0
    progress = tqdm(total=total_steps, desc="autoencoder", unit="step", disable=not show_progress, leave=False)
    for epoch in range(epochs):
        power = l1_power(epoch, config.l1_power_start, config.l1_power_end, config.l1_power_decay_epochs)
        lr = config.learning_rate * config.lr_gamma ** (epoch // config.lr_step_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(num_rows, generator=generator)
        total, count = 0.0, 0
        for start in range(0, num_rows, config.batch_size):
            if step >= total_steps:
                break
            batch = matrix[order[start : start + config.batch_size]]
            loss = direction_loss(
                decoder(encoder(batch)),
                batch,
                cosine_weight=config.cosine_weight,
                l1_weight=config.l1_weight,
                rmse_weight=config.rmse_weight,
                power=power,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.shape[0]
            count += batch.shape[0]
            step += 1
            progress.update(1)
        history.append(total / max(count, 1))
        progress.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.5f}")
    progress.close()
    return history
