"""The paper's AutoEncoder, trained on the rows of E with the direction-aware loss.

"Direction is what you need" (Bałazy et al., RepL4NLP 2021): encoder `Linear(d, k)`, decoder `Linear(k, d)`
(or a small MLP), loss `0.1995 * mean(1 - cos) + 0.0025 * mean((|x_hat - x| + 1e-10) ** p)` with `p`
decaying linearly from 1.0 to 0.1 over 20 epochs, Adam (lr 1e-3), StepLR (4 epochs, x0.5), batches of 32
shuffled rows, 30 epochs. After training the encoder is thrown away: the codes are its outputs.

Training runs through `accelerate.Accelerator`, so the same code runs on CPU, on one GPU, and data parallel under
`accelerate launch --num_processes N` (rows of E split across processes, gradients averaged by DDP). Each shuffled
global batch of `batch_size` rows is split across the processes and every local loss is weighted by its share of
the batch, so the optimisation is the single-process one up to float rounding. Mixed precision follows the
accelerate configuration (`accelerate launch --mixed_precision bf16`, or pass `accelerator=Accelerator(...)`); the
default on CPU is fp32, where a seed gives bitwise-equal codes. The codes of all rows are computed in chunks, each
process encoding its share, and gathered on every process; only the main process should save them:

```bash
accelerate launch --multi_gpu --num_processes 8 my_script.py  # compress_model(...); save on the main process
```

On a machine without GPU the same command trains on CPU over gloo (`default_accelerator` picks `cpu=True`);
`accelerate launch --cpu --num_processes N` starts several processes only through `mpirun`.
"""

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from ..cards import PAPER, PAPER_BIBTEX, MethodText, parameter_rows
from ..configuration import CompressedEmbeddingConfig
from ..layer import DecoderLinear, build_decoder
from ..losses import direction_loss, l1_power
from . import MethodConfig, MethodOutput, register_method
from .svd import svd as svd_method

CHUNK_ROWS = 16384
# Below this many entries per batch, intra-op threads cost more than they give (10x slower on 2 CPUs for the
# paper's 32 x 768 batches), so training runs on one thread.
SMALL_BATCH_ENTRIES = 1 << 18


def _svd_init(matrix: torch.Tensor, config: CompressedEmbeddingConfig, encoder: nn.Linear, decoder: nn.Module) -> None:
    if not isinstance(decoder, DecoderLinear):
        raise ValueError("init='svd' needs a linear decoder; leave decoder_hidden_dims empty or use init='random'.")
    svd_config = dataclasses.replace(config, method="svd", method_config=None, decoder_bias=config.use_decoder_bias)
    start = svd_method(matrix, svd_config, show_progress=False).decoder_state
    basis = start["weight"]  # d x k
    mean = start.get("bias", torch.zeros(matrix.shape[1]))
    with torch.no_grad():
        encoder.weight.copy_(basis.T)
        encoder.bias.copy_(-(basis.T @ mean))
        decoder.weight.copy_(basis)
        if decoder.bias is not None:
            decoder.bias.copy_(mean)


@dataclass
class AutoencoderConfig(MethodConfig):
    """Settings of the paper's AutoEncoder (`method="autoencoder"`); the defaults are its published recipe.

    Args:
        cosine_weight (`float`, *optional*, defaults to 0.1995):
            Weight of the direction term `mean(1 - cos(x_hat, x))` (the paper's 0.9975 / 5).
        l1_weight (`float`, *optional*, defaults to 0.0025):
            Weight of the "powered L1" term `mean((|x_hat - x| + 1e-10) ** p)`.
        rmse_weight (`float`, *optional*, defaults to 0.0):
            Weight of the RMSE term (0 in the published configuration).
        l1_power_start (`float`, *optional*, defaults to 1.0):
            Initial power p of the L1 term.
        l1_power_end (`float`, *optional*, defaults to 0.1):
            Final power p of the L1 term.
        l1_power_decay_epochs (`int`, *optional*, defaults to 20):
            The power p decays linearly from start to end over that many epochs, then stays at the end value.
        epochs (`int`, *optional*, defaults to 30):
            Passes over the rows of E (the paper's 20 + 10).
        max_steps (`int`, *optional*):
            If set, stop after this many optimiser steps (overrides `epochs`).
        batch_size (`int`, *optional*, defaults to 32):
            Rows per optimiser step.
        learning_rate (`float`, *optional*, defaults to 1e-3):
            Adam learning rate.
        lr_step_epochs (`int`, *optional*, defaults to 4):
            StepLR period: the learning rate is multiplied by `lr_gamma` every `lr_step_epochs` epochs.
        lr_gamma (`float`, *optional*, defaults to 0.5):
            StepLR factor.
        init (`str`, *optional*, defaults to `"random"`):
            Initialisation: `"random"` (the paper) or `"svd"` (start from the SVD solution).
    """

    name = "autoencoder"
    summary = "the paper's direction-aware AutoEncoder, its published recipe"
    decoder_bias = True
    presets = {"paper": {}}
    card = MethodText(
        name=f'direction-aware autoencoder (["Direction is what you need"]({PAPER}), Bałazy et al., 2021)',
        description=(
            "Each row of the embedding is encoded to a code of {code_dim} values by an autoencoder trained on the "
            "rows with the paper's direction-aware loss (a cosine term plus a powered L1 term), so that decoded rows "
            "keep the direction of the originals; the codes are kept and the encoder dropped. It reads the "
            "embedding matrix only (no data). Its ratio counts stored parameters."
        ),
        ratio_unit="parameters",
        size_rows=parameter_rows,
        history_rows=lambda history, spec: (
            [(f"final training loss (autoencoder objective, epoch {len(history)})", f"{history[-1]:.5g}")]
            if history
            else []
        ),
        citation=PAPER_BIBTEX,
    )

    cosine_weight: float = field(default=0.1995, metadata={"help": "Weight of mean(1 - cos) (the paper's 0.1995)."})
    l1_weight: float = field(default=0.0025, metadata={"help": "Weight of the powered L1 term (0.0025)."})
    rmse_weight: float = field(default=0.0, metadata={"help": "Weight of the RMSE term (0)."})
    l1_power_start: float = field(default=1.0, metadata={"help": "Initial power of the L1 term (1.0)."})
    l1_power_end: float = field(default=0.1, metadata={"help": "Final power of the L1 term (0.1)."})
    l1_power_decay_epochs: int = field(default=20, metadata={"help": "Epochs of linear power decay (20)."})
    epochs: int = field(default=30, metadata={"help": "Epochs over the rows of E (the paper's 30)."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimiser steps."})
    batch_size: int = field(default=32, metadata={"help": "Rows per optimiser step (32)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (1e-3)."})
    lr_step_epochs: int = field(default=4, metadata={"help": "StepLR period in epochs (4)."})
    lr_gamma: float = field(default=0.5, metadata={"help": "StepLR factor (0.5)."})
    init: str = field(default="random", metadata={"help": "Initialisation (random).", "choices": ("random", "svd")})

    def validate(self) -> None:
        super().validate()
        self.require_int("epochs", "batch_size", "lr_step_epochs")
        self.require_int("l1_power_decay_epochs", minimum=0)
        self.require_int("max_steps", optional=True)
        self.require_number("cosine_weight", "l1_weight", "rmse_weight", "l1_power_start", "l1_power_end", "lr_gamma")
        self.require_number("learning_rate", positive=True)
        if self.cosine_weight + self.l1_weight + self.rmse_weight == 0:
            self.fail("cosine_weight", "a positive weight on at least one loss term (cosine, l1 or rmse)")


def default_accelerator() -> Accelerator:
    """`Accelerator()` from the environment (`accelerate launch` and its config), on CPU where the machine has no
    accelerator, so that processes started by `accelerate launch --multi_gpu` (torchrun) on a CPU-only machine
    train together over gloo instead of each alone."""
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return Accelerator(cpu=not has_accelerator)


class _AutoEncoder(nn.Module):
    """Encoder + decoder in one module, so that accelerate wraps both (DDP, autocast) in one `prepare`."""

    def __init__(self, encoder: nn.Linear, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(rows))


def autoencoder(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    *,
    show_progress: bool = True,
    accelerator: Accelerator | None = None,
) -> MethodOutput:
    """Train the paper's AutoEncoder on the rows of `matrix`; return the codes and the decoder.

    `matrix` (V x d, float32) stays where it is (on CPU); batches are copied to `accelerator.device`. Every process
    returns the full codes; under `accelerate launch` only the main process should write them.
    """
    accelerator = accelerator if accelerator is not None else default_accelerator()
    num_rows, d = matrix.shape
    k = config.code_dim
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = nn.Linear(d, k)
        decoder = build_decoder(k, d, config.decoder_hidden_dims, config.decoder_activation, config.use_decoder_bias)
    if config.init == "svd":
        _svd_init(matrix, config, encoder, decoder)
    model = _AutoEncoder(encoder, decoder)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    total_steps = config.max_steps or config.epochs * math.ceil(num_rows / config.batch_size)
    threads = torch.get_num_threads()
    if config.batch_size * d <= SMALL_BATCH_ENTRIES:
        torch.set_num_threads(1)
    try:
        history = _train(matrix, config, model, optimizer, accelerator, generator, total_steps, show_progress)
        codes = _encode(matrix, accelerator.unwrap_model(model).encoder, accelerator)
    finally:
        torch.set_num_threads(threads)
    decoder = accelerator.unwrap_model(model).decoder
    state = {name: tensor.detach().to("cpu", torch.float32).clone() for name, tensor in decoder.state_dict().items()}
    return MethodOutput(codes=codes, decoder_state=state, loss_history=history)


def _encode(matrix: torch.Tensor, encoder: nn.Module, accelerator: Accelerator) -> torch.Tensor:
    """The codes of all rows (V x k, float32, on CPU): each process encodes its contiguous share in chunks of
    `CHUNK_ROWS` rows, then the shares are gathered (padded to equal length, as `gather` needs)."""
    num_rows = matrix.shape[0]
    share = math.ceil(num_rows / accelerator.num_processes)
    first = min(accelerator.process_index * share, num_rows)
    last = min(first + share, num_rows)
    device = accelerator.device
    codes = torch.zeros(share, encoder.out_features, dtype=torch.float32)
    with torch.no_grad():
        for start in range(first, last, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, last)
            codes[start - first : stop - first] = encoder(matrix[start:stop].to(device)).float().cpu()
    if accelerator.num_processes == 1:
        return codes
    return accelerator.gather(codes.to(device)).cpu()[:num_rows]


def _train(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    generator: torch.Generator,
    total_steps: int,
    show_progress: bool,
) -> list[float]:
    """The training loop; returns the mean loss of each epoch (over all processes).

    Every process draws the same shuffled order; each global batch is split into `num_processes` near-equal
    parts, and each process scales its local mean loss by `num_processes * local_rows / batch_rows`, so that the
    gradients DDP averages are those of the global batch's mean loss.
    """
    num_rows = matrix.shape[0]
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    steps_per_epoch = math.ceil(num_rows / config.batch_size)
    epochs = math.ceil(total_steps / steps_per_epoch)
    history: list[float] = []
    step = 0
    show_progress = show_progress and accelerator.is_local_main_process
    progress = tqdm(total=total_steps, desc="autoencoder", unit="step", disable=not show_progress, leave=False)
    model.train()
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
            indices = order[start : start + config.batch_size]
            if world > 1:
                global_rows, indices = indices.shape[0], indices.tensor_split(world)[rank]
            batch = matrix[indices].to(device, non_blocking=True)
            reconstructed = model(batch).float()
            if batch.shape[0]:
                loss = direction_loss(
                    reconstructed,
                    batch,
                    cosine_weight=config.cosine_weight,
                    l1_weight=config.l1_weight,
                    rmse_weight=config.rmse_weight,
                    power=power,
                )
            else:  # fewer rows than processes in the last batch: take part in the gradient all-reduce with zeros
                loss = reconstructed.sum()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss if world == 1 else loss * (world * batch.shape[0] / global_rows))
            optimizer.step()
            total += loss.item() * batch.shape[0]
            count += batch.shape[0]
            step += 1
            progress.update(1)
        if world > 1:
            sums = accelerator.reduce(torch.tensor([total, count], dtype=torch.float64, device=device), "sum")
            total, count = float(sums[0]), int(sums[1])
        history.append(total / max(count, 1))
        progress.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.5f}")
    progress.close()
    return history


register_method(AutoencoderConfig, autoencoder)
