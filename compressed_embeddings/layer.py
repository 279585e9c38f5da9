"""The compressed token embedding (codes + decoder) and the output head that shares it.

This file travels inside every saved checkpoint (remote code): it imports only the standard library, torch and
single-dot siblings.
"""

import hashlib
import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import logging

from .configuration import CompressedEmbeddingConfig
from .packed_codes import PackedCodes
from .packed_runtime import KERNEL_MAX_POSITIONS, GridError, PackedRuntime, kernels_available

logger = logging.get_logger(__name__)

#: The module of each decoder activation that `configuration.ACTIVATIONS` names.
ACTIVATION_MODULES = {"elu": nn.ELU, "gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
#: The torch dtype of each unpacked codes storage that `configuration.CODES_DTYPES` names.
CODES_TORCH_DTYPES = {name: getattr(torch, name) for name in ("float32", "float16", "bfloat16", "int8")}


def absmax_int8(values: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 `values` and their absmax scales along `dim` (`values ~ int8 * scales`): int8 codes, `Int8Linear`."""
    values = values.detach().float()
    scales = values.abs().amax(dim).clamp_min(1e-12) / 127.0
    return torch.round(values / scales.unsqueeze(dim)).clamp_(-127, 127).to(torch.int8), scales


class DecoderLinear(nn.Module):
    r"""
    A linear layer of the decoder: `nn.Linear`'s parameters (`weight`, `out x in`, and `bias`), initialisation and
    product (`F.linear`), and its state dict, but deliberately not an `nn.Linear` subclass.

    Tools that act on every `nn.Linear` of a model take the layers of its body, and so leave this one alone, as they
    leave [`Int8Linear`] alone: weight-only quantisers (torchao's `quantize_` and transformers' `TorchAoConfig`,
    bitsandbytes) and PEFT's `target_modules="all-linear"`. The decoder is part of the stored embedding (its bytes are
    counted in the compression ratio), and a tied head reads its weight to compute in code space
    ([`CompressedOutputHead`]), which a quantised tensor subclass in its place would break.

    Example:

    ```python
    >>> import torch
    >>> layer = DecoderLinear(4, 3)
    >>> layer(torch.ones(2, 4)).shape, isinstance(layer, torch.nn.Linear)
    (torch.Size([2, 3]), False)
    ```
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        bias_value = torch.empty(out_features, device=device, dtype=dtype) if bias else None
        self.register_parameter("bias", None if bias_value is None else nn.Parameter(bias_value))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`nn.Linear`'s initialisation (the same random draws, in the same order)."""
        nn.Linear.reset_parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def sha256(tensor: torch.Tensor) -> str:
    """The SHA-256 (hexadecimal) of a tensor's bytes, as a safetensors file stores them (row-major)."""
    return hashlib.sha256(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()).hexdigest()


class Int8Linear(nn.Module):
    r"""
    `nn.Linear` whose weight is stored as int8 with one float scale per input column, `weight = qweight * scales`
    (a quarter of the bytes; dequantised on use). The int8 part is never cast by `.to(dtype)` or trained.

    Example:

    ```python
    >>> import torch
    >>> layer = Int8Linear(4, 3)
    >>> layer.set_weight(torch.eye(3, 4))
    >>> layer.weight.tolist()[0]
    [1.0, 0.0, 0.0, 0.0]
    ```
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.scales = nn.Parameter(torch.ones(in_features, device=device, dtype=dtype))  # first: sets the dtype
        values = torch.zeros(out_features, in_features, device=device, dtype=torch.int8)
        self.qweight = nn.Parameter(values, requires_grad=False)
        bias_value = torch.zeros(out_features, device=device, dtype=dtype) if bias else None
        self.register_parameter("bias", None if bias_value is None else nn.Parameter(bias_value))
        self.in_features, self.out_features = in_features, out_features

    def reset_parameters(self) -> None:
        self.set_weight(nn.init.kaiming_uniform_(torch.empty(self.qweight.shape), a=math.sqrt(5)))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))

    @staticmethod
    def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """int8 values and per-column absmax scales of a float `out x in` weight (`weight ~ values * scales`)."""
        return absmax_int8(weight, 0)

    @staticmethod
    def rounded(weight: torch.Tensor) -> torch.Tensor:
        """A float `out x in` weight as an `Int8Linear` stores it (quantised by `quantize`, dequantised), in fp32."""
        values, scales = Int8Linear.quantize(weight)
        return values.float() * scales

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Store a float `out x in` weight, quantised by `quantize`."""
        values, scales = self.quantize(weight)
        self.qweight.copy_(values)
        self.scales.copy_(scales)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (`out x in`, in the dtype of `scales`)."""
        return self.qweight.to(self.scales.dtype) * self.scales

    def _kernel(self, x: torch.Tensor, width: int) -> bool:
        """Whether the int8 weight-only kernel can take `x` as it is: a few rows of bf16 activations on the CPU (where
        it gives a bf16 `F.linear`'s result without dequantising the weight), a width it handles, no gradient."""
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.scales.requires_grad)
        return (
            x.numel() <= KERNEL_MAX_POSITIONS * width  # its cost grows with the rows: beyond, the dense product wins
            and x.dtype == torch.bfloat16
            and self.scales.dtype == torch.bfloat16
            and width % 16 == 0
            and not needs_grad
            and kernels_available(x.device)
        )

    def _ones(self, size: int, device: torch.device) -> torch.Tensor:
        cache = self.__dict__.setdefault("_ones_cache", {})
        if (size, device) not in cache:
            cache[size, device] = torch.ones(size, dtype=torch.bfloat16, device=device)
        return cache[size, device]

    def _kernel_weight(self, transposed: bool) -> torch.Tensor:
        """The int8 weight as the kernel reads it: the kernel needs it aligned (it crashes on a tensor memory-mapped
        from a checkpoint at an arbitrary offset), and `project` needs it transposed; a copy (`out x in` bytes,
        refreshed when the weight changes) where the stored tensor is not that."""
        if not transposed and self.qweight.data_ptr() % 64 == 0 and self.qweight.is_contiguous():
            return self.qweight
        key = (self.qweight.data_ptr(), self.qweight._version, self.qweight.device)
        cache = self.__dict__.setdefault("_kernel_weights", {})
        if cache.get(transposed, (None,))[0] != key:
            weight = self.qweight.T if transposed else self.qweight
            cache[transposed] = (key, torch.empty(weight.shape, dtype=torch.int8, device=weight.device).copy_(weight))
        return cache[transposed][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._kernel(x, self.in_features):
            return F.linear(x, self.weight, self.bias)
        flat = (x * self.scales).reshape(-1, self.in_features)
        out = torch._weight_int8pack_mm(flat, self._kernel_weight(False), self._ones(self.out_features, x.device))
        out = out.view(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """`h @ weight` (`... x out` -> `... x in`): a tied head's hidden states taken into code space."""
        if not self._kernel(h, self.out_features):
            return h @ self.weight
        flat = h.reshape(-1, self.out_features).contiguous()
        out = torch._weight_int8pack_mm(flat, self._kernel_weight(True), self.scales.clone())
        return out.view(*h.shape[:-1], self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def build_decoder(
    code_dim: int,
    embedding_dim: int,
    hidden_dims: list[int] | tuple[int, ...] = (),
    activation: str = "elu",
    bias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    int8: bool = False,
) -> nn.Module:
    """The decoder `code_dim -> *hidden_dims -> embedding_dim`: one `DecoderLinear` (`Int8Linear` with `int8`) when
    `hidden_dims` is empty. Its linear layers are never `nn.Linear`s, so that quantisers of the body leave them alone
    (see `DecoderLinear`)."""
    if int8 and hidden_dims:
        raise ValueError("An int8 decoder is one linear layer: leave decoder_hidden_dims empty.")
    if int8:
        return Int8Linear(code_dim, embedding_dim, bias=bias, device=device, dtype=dtype)
    dims = [code_dim, *hidden_dims, embedding_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers.append(ACTIVATION_MODULES[activation]())
        layers.append(DecoderLinear(a, b, bias=bias, device=device, dtype=dtype))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class CompressedEmbedding(nn.Module):
    r"""
    A token embedding stored as per-token codes (`V x k`) and a small decoder (`k -> d`).

    `forward(input_ids)` looks up the codes of the given ids and decodes only those rows; the full
    `V x d` matrix is never built unless `weight` is read. It keeps the semantics of the embedding it
    replaces: `padding_idx`, and an output scale such as Gemma's `sqrt(d)` (`embed_scale`, applied to
    looked-up rows, not to `weight`, exactly like `Gemma3TextScaledWordEmbedding`).

    Args:
        num_embeddings (`int`): vocabulary size V.
        embedding_dim (`int`): hidden size d.
        code_dim (`int`): code width k.
        decoder_hidden_dims (`list[int]`, *optional*): hidden widths of a non-linear decoder.
        decoder_activation (`str`, *optional*, defaults to `"elu"`): activation between decoder layers.
        decoder_bias (`bool`, *optional*, defaults to `True`): bias in the decoder layers.
        decoder_dtype (`str`, *optional*): `"int8"` stores a linear decoder's weight as an [`Int8Linear`].
        padding_idx (`int`, *optional*): index of the padding token, as in `nn.Embedding`.
        embed_scale (`float`, *optional*, defaults to 1.0): multiplies every looked-up row.
        zero_padding_row (`bool`, *optional*, defaults to `False`): the padding row decodes to exact zeros
            (set when the replaced embedding's padding row was zero).
        freeze_codes (`bool`, *optional*, defaults to `True`): `codes.requires_grad = False`.
        codes_dtype (`str`, *optional*): store the codes as `"float16"`, `"bfloat16"` or `"int8"` (with one
            scale per row, `code_scales`), dequantised on the fly; or `"packed"`: integers of a few bits indexing
            per-column codebooks (`packed`, a [`PackedCodes`], laid out by `code_bits` and `tier_sizes`), as
            `method="transform_coding"` produces; default: the layer's dtype.
        code_bits (`list[list[int]]`, *optional*): with `codes_dtype="packed"`, the bits of each code column, per tier.
        tier_sizes (`list[int]`, *optional*): with `codes_dtype="packed"`, the number of rows in each tier.

    Example:

    ```python
    >>> import torch
    >>> from compressed_embeddings import CompressedEmbedding
    >>> layer = CompressedEmbedding(num_embeddings=100, embedding_dim=32, code_dim=4)
    >>> layer(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 32])
    ```
    """

    #: How packed codes' runtime layout multiplies (see `packed_runtime`): `"kernels"` (int8 / int4 weight-only
    #: kernels, bf16 activations; the CPU) or `"exact"` (int8, in the activations' dtype, chunk by chunk).
    runtime_mode: str = "kernels"

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        code_dim: int,
        *,
        decoder_hidden_dims: list[int] | tuple[int, ...] = (),
        decoder_activation: str = "elu",
        decoder_bias: bool = True,
        decoder_dtype: str | None = None,
        padding_idx: int | None = None,
        embed_scale: float = 1.0,
        zero_padding_row: bool = False,
        freeze_codes: bool = True,
        codes_dtype: str | None = None,
        code_bits: list[list[int]] | None = None,
        tier_sizes: list[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx must be in [-{num_embeddings}, {num_embeddings}), got {padding_idx}.")
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        self.embed_scale = float(embed_scale)
        self.zero_padding_row = bool(zero_padding_row and padding_idx is not None)
        self.codes_dtype = codes_dtype
        if codes_dtype == "packed":
            if code_bits is None or tier_sizes is None or sum(tier_sizes) != num_embeddings:
                raise ValueError(f"codes_dtype='packed' needs code_bits and tier_sizes summing to {num_embeddings}.")
            if any(len(widths) != code_dim for widths in code_bits):
                raise ValueError(f"codes_dtype='packed': every tier of code_bits needs {code_dim} widths.")
            self.packed = PackedCodes(code_bits, tier_sizes, device=device, dtype=dtype)
            self.register_parameter("codes", None)
        else:
            storage = CODES_TORCH_DTYPES[codes_dtype] if codes_dtype else dtype
            self.codes = nn.Parameter(torch.empty(num_embeddings, code_dim, device=device, dtype=storage), False)
            self.codes.requires_grad_(not freeze_codes and self.codes.is_floating_point())
        scales = torch.empty(num_embeddings, device=device, dtype=dtype) if codes_dtype == "int8" else None
        self.code_scales = None if scales is None else nn.Parameter(scales, requires_grad=False)
        self.decoder = build_decoder(
            code_dim, embedding_dim, decoder_hidden_dims, decoder_activation, decoder_bias, device, dtype,
            int8=decoder_dtype == "int8",
        )  # fmt: skip
        self._embedding_dim = embedding_dim
        self.reset_parameters()

    @classmethod
    def from_config(
        cls,
        config: CompressedEmbeddingConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "CompressedEmbedding":
        """Build the (uninitialised) layer a resolved `CompressedEmbeddingConfig` describes."""
        return cls(
            config.num_embeddings,
            config.embedding_dim,
            config.code_dim,
            decoder_hidden_dims=config.decoder_hidden_dims,
            decoder_activation=config.decoder_activation,
            decoder_bias=config.use_decoder_bias,
            decoder_dtype=config.decoder_dtype,
            padding_idx=config.padding_idx,
            embed_scale=config.embed_scale,
            zero_padding_row=config.zero_padding_row,
            freeze_codes=config.freeze_codes,
            codes_dtype=config.codes_dtype,
            code_bits=config.code_bits,
            tier_sizes=config.tier_sizes,
            device=device,
            dtype=dtype,
        )

    def reset_parameters(self) -> None:
        """Random codes (unit-variance rows; packed codes: all zero) and a default-initialised decoder; a no-op on
        the meta device."""
        if next(self.decoder.parameters()).device.type == "meta":
            return
        with torch.no_grad():
            if self.codes is not None:
                self.set_codes(torch.randn(self.codes.shape, device=self.codes.device) / math.sqrt(self.code_dim))
            for module in self.decoder.modules():
                if isinstance(module, (DecoderLinear, Int8Linear)):
                    module.reset_parameters()

    @torch.no_grad()
    def set_codes(self, codes: torch.Tensor) -> None:
        """Store float codes (`V' x k`, any V') in this layer's storage format (int8: per-row absmax scales)."""
        if self.codes is None:
            raise ValueError(
                "Packed codes are integers chosen by their compression method: set them with "
                "`layer.packed.set_codes(...)`; they cannot be replaced by float codes or resized."
            )
        device = self.codes.device
        if self.code_scales is not None:
            quantized, scales = absmax_int8(codes, 1)
            self.codes = nn.Parameter(quantized.to(device), requires_grad=False)
            self.code_scales = nn.Parameter(scales.to(device, self.code_scales.dtype), requires_grad=False)
        else:
            self.codes = nn.Parameter(codes.to(device, self.codes.dtype), requires_grad=self.codes.requires_grad)

    @torch.no_grad()
    def load_decoder_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a method's float decoder state dict (an int8 decoder rounds its weight with `absmax_int8`)."""
        if isinstance(self.decoder, Int8Linear) and "weight" in state:
            self.decoder.set_weight(state["weight"])
            if self.decoder.bias is not None:
                self.decoder.bias.copy_(state["bias"])
        else:
            self.decoder.load_state_dict(state)

    def stored_problems(self, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
        """What is wrong with stored tensors of this layer (`{state-dict name: tensor}`, as a checkpoint holds them),
        that their shapes cannot show: non-finite floats, int8 values of -128 (absmax rounding writes -127..127),
        scales <= 0, row tiers out of range or other than `tier_sizes`. `{name: what is wrong}`; empty if nothing."""
        problems = {}
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not (finite := torch.isfinite(tensor)).all():
                first = tuple((~finite).nonzero()[0].tolist())
                problems[name] = f"holds {int((~finite).sum())} NaN or infinite value(s) (the first at {first})"
            elif tensor.dtype == torch.int8 and (tensor == -128).any():
                problems[name] = f"holds {int((tensor == -128).sum())} value(s) -128, which int8 rounding never writes"
            elif name.endswith("scales") and (tensor <= 0).any():
                problems[name] = f"holds {int((tensor <= 0).sum())} scale(s) <= 0 (scales are positive)"
        tiers = tensors.get("packed.row_tiers") if self.codes is None else None
        if tiers is not None:
            tiers, count = tiers.long(), len(self.packed.bits)
            if (wrong := (tiers < 0) | (tiers >= count)).any():
                row = int(wrong.nonzero()[0])
                problems["packed.row_tiers"] = f"gives row {row} tier {int(tiers[row])}; config.json has {count} tiers"
            elif (sizes := torch.bincount(tiers, minlength=count).tolist()) != self.packed.tier_sizes:
                problems["packed.row_tiers"] = f"puts {sizes} rows in the tiers, config.json {self.packed.tier_sizes}"
        return problems

    # ------------------------------------------------------------------ sizes
    def stored_parameters(self) -> int:
        """Values stored (codes, their scales, decoder; packed codes: their bytes, codebooks and tiers)."""
        return sum(p.numel() for p in self.parameters())

    def stored_bytes(self) -> int:
        """Bytes stored: every tensor of the state dict (what a checkpoint holds for this layer)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    def compression_ratio(self, dtype: torch.dtype | None = None) -> float:
        """Bytes of the `V x d` matrix it replaces in `dtype` (default: `compute_dtype`) / `stored_bytes()`."""
        element_size = torch.empty((), dtype=dtype or self.compute_dtype).element_size()
        return self.num_embeddings * self.embedding_dim * element_size / max(self.stored_bytes(), 1)

    # ------------------------------------------------------------------ shape
    @property
    def num_embeddings(self) -> int:
        return self.packed.num_rows if self.codes is None else self.codes.shape[0]

    @property
    def code_dim(self) -> int:
        return self.packed.width if self.codes is None else self.codes.shape[1]

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    @property
    def is_linear(self) -> bool:
        """Whether the decoder is a single linear map."""
        return isinstance(self.decoder, (DecoderLinear, Int8Linear))

    @property
    def head_in_code_space(self) -> bool:
        """Whether a tied head computes `(h W) C^T + h . b` instead of decoding `E`: a linear decoder (over float or
        int8 codes, or over packed codes through their runtime layout, `packed_runtime`)."""
        return self.is_linear

    def packed_runtime(self, read_planes=None) -> PackedRuntime | None:
        """The runtime layout of packed codes ([`PackedRuntime`], in `runtime_mode`), built on first use and rebuilt
        whenever the planes, codebooks or row tiers change or move, or the mode changes; `None` for other codes, or
        for codebooks that are not on their grids (checkpoints of older releases; the head then decodes the rows
        chunk by chunk). `read_planes` builds it from another copy of the planes (see `PackedRuntime`)."""
        if self.codes is not None:
            return None
        mode = self.runtime_mode
        tensors = [*self.packed.planes, *self.packed.codebooks, self.packed.row_tiers]
        key = (mode, *((t.data_ptr(), t._version, t.device) for t in tensors))
        cached = self.__dict__.get("_runtime")
        if cached is None or cached[0] != key:
            try:
                with torch.no_grad():
                    runtime = PackedRuntime(self.packed, mode, read_planes)
            except GridError as error:
                logger.warning_once(
                    f"The packed codebooks are not on the grids this release computes logits from ({error}), so the "
                    "tied head decodes the vocabulary chunk by chunk (slower; no extra memory). Re-create the "
                    "checkpoint with `compressed-embeddings compress` to get the fast runtime layout."
                )
                runtime = None
            cached = (key, runtime)
            self.__dict__["_runtime"] = cached
        return cached[1]

    # ------------------------------------------------------------------ compute
    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype codes are dequantised to: that of the decoder."""
        return next(p for p in self.decoder.parameters() if p.is_floating_point()).dtype

    def _dequantize(self, codes: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
        codes = codes.to(self.compute_dtype)
        return codes if scales is None else codes * scales.to(self.compute_dtype).unsqueeze(-1)

    def lookup(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The codes of `input_ids` (`... x k`), dequantised to `compute_dtype` (packed codes: from their runtime
        layout unless their codebooks are being trained, so that inference never reads the stored planes)."""
        if self.codes is None:
            training = torch.is_grad_enabled() and any(p.requires_grad for p in self.packed.codebooks)
            runtime = None if training else self.packed_runtime()
            codes = self.packed.lookup(input_ids) if runtime is None else runtime.lookup(input_ids)
            return codes.to(self.compute_dtype)
        scales = None if self.code_scales is None else self.code_scales[input_ids]
        return self._dequantize(F.embedding(input_ids, self.codes), scales)

    def dense_codes(self) -> torch.Tensor:
        """All codes (`V x k`) in `compute_dtype` (the stored tensor itself when no conversion is needed)."""
        if self.codes is None:
            return self.lookup(torch.arange(self.num_embeddings, device=self.packed.row_tiers.device))
        return self._dequantize(self.codes, self.code_scales)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode code rows (`... x k`) into embedding rows (`... x d`), without `embed_scale`."""
        return self.decoder(codes)

    def decoded_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows `start:stop` of `weight` (decoded on demand, padding row included), e.g. to stream over the matrix
        without building it: `embedding_fidelity(original, layer.decoded_rows)`."""
        device = self.codes.device if self.codes is not None else self.packed.row_tiers.device
        ids = torch.arange(start, stop, device=device)
        return self._zero_padding(self.decode(self.lookup(ids)), ids)

    def _zero_padding(self, rows: torch.Tensor, input_ids: torch.Tensor | None) -> torch.Tensor:
        if not self.zero_padding_row:
            return rows
        if input_ids is None:  # full matrix
            mask = torch.zeros(rows.shape[0], 1, dtype=torch.bool, device=rows.device)
            mask[self.padding_idx] = True
        else:
            mask = (input_ids == self.padding_idx).unsqueeze(-1)
        return rows.masked_fill(mask, 0.0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self._zero_padding(self.decode(self.lookup(input_ids)), input_ids)
        if self.embed_scale != 1.0:
            rows = rows * torch.tensor(self.embed_scale, dtype=rows.dtype, device=rows.device)
        return rows

    @property
    def weight(self) -> torch.Tensor:
        """The decoded `V x d` matrix (without `embed_scale`, like `nn.Embedding.weight`).

        Computed on every access: it costs `V x d` memory and a full decode. Prefer `forward` for lookups.
        """
        return self._zero_padding(self.decode(self.dense_codes()), None)

    def extra_repr(self) -> str:
        decoder = "linear" if self.is_linear else "mlp"
        text = (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, code_dim={self.code_dim}, "
            f"decoder={decoder}, stored_bytes={self.stored_bytes()}, ratio={self.compression_ratio():.2f}x"
        )
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.embed_scale != 1.0:
            text += f", embed_scale={self.embed_scale:g}"
        if self.codes_dtype:
            text += f", codes_dtype={self.codes_dtype}"
        return text


class CompressedOutputHead(nn.Module):
    r"""
    An output head read from a `CompressedEmbedding`: `logits = h @ E^T (+ bias)` with `E` the decoded matrix.

    Tied (the default), it owns no copy of the embedding (only an optional per-token `bias`, as in BERT's masked-LM
    decoder), so input and output always agree; untied (`tied=False`), the layer holds the head's own codes and is
    its submodule `embedding`. With a linear decoder `E = C W^T + 1 b^T` it computes in code space,
    `(h W) C^T + (h . b)`, and never builds `E`; packed codes do it from their runtime layout (int8 / int4 matrices,
    [`PackedRuntime`]) in inference, and decode `C` (`V x k`) only when gradients are needed.

    Args:
        embedding (`CompressedEmbedding`): the input embedding the head is tied to (or, untied, its own codes).
        bias (`bool`, *optional*, defaults to `False`): a learnt per-token output bias.
        tied (`bool`, *optional*, defaults to `True`): whether `embedding` is the model's input embedding.
    """

    def __init__(self, embedding: CompressedEmbedding, bias: bool = False, tied: bool = True) -> None:
        super().__init__()
        # Tied: a plain attribute, not a submodule, so the embedding is registered (and saved) once, where it lives.
        self.__dict__["_embedding"] = embedding
        if not tied:
            self._modules["embedding"] = embedding  # (`add_module` would refuse the name of the property)
        self.tied = tied
        if bias:
            device = next(embedding.decoder.parameters()).device  # float or packed codes: there is always a decoder
            self.bias = nn.Parameter(
                torch.zeros(embedding.num_embeddings, device=device, dtype=embedding.compute_dtype)
            )
        else:
            self.register_parameter("bias", None)

    @property
    def embedding(self) -> CompressedEmbedding:
        own = self._modules.get("embedding")  # untied: the submodule (tools may replace it in place)
        return self.__dict__["_embedding"] if own is None else own

    @property
    def in_features(self) -> int:
        return self.embedding.embedding_dim

    @property
    def out_features(self) -> int:
        return self.embedding.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        """The decoded matrix the head multiplies by (costly: see `CompressedEmbedding.weight`)."""
        return self.embedding.weight

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        embedding = self.embedding
        if embedding.head_in_code_space:
            decoder = embedding.decoder
            if isinstance(decoder, Int8Linear):
                projected = decoder.project(hidden_states)  # (..., d) @ (d, k) -> (..., k)
            else:
                projected = hidden_states @ decoder.weight
            logits = self._code_space_logits(projected, hidden_states)
            if decoder.bias is not None:
                logits = logits + (hidden_states @ decoder.bias).unsqueeze(-1)
            if embedding.zero_padding_row:
                logits = logits.index_fill(-1, torch.tensor([embedding.padding_idx], device=logits.device), 0.0)
        else:
            logits = F.linear(hidden_states, self._decoded_matrix())
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def _code_space_logits(self, projected: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """`projected C^T`: float and int8 codes directly; packed codes through their runtime layout when no gradient
        is needed (training keeps the differentiable path: every code decoded, `V x k` floats), else chunk by chunk
        (codebooks off their grids)."""
        embedding = self.embedding
        if embedding.codes is not None:
            return F.linear(projected, embedding.dense_codes())
        training = torch.is_grad_enabled() and (
            projected.requires_grad or any(p.requires_grad for p in embedding.packed.codebooks)
        )
        runtime = None if training else embedding.packed_runtime()
        if runtime is not None:
            return runtime.logits(projected).to(projected.dtype)
        if training:
            return F.linear(projected, embedding.dense_codes())
        rows = embedding.num_embeddings
        parts = [
            F.linear(projected, embedding.packed.lookup(torch.arange(start, min(start + 8192, rows))).to(projected))
            for start in range(0, rows, 8192)
        ]
        return torch.cat(parts, dim=-1)

    def _decoded_matrix(self) -> torch.Tensor:
        """Non-linear decoders do not run in code space. Policy: with gradients enabled (training) the matrix is
        decoded on every call; without (inference) it is decoded once and cached (`V x d` memory, as much as the
        replaced embedding) until the codes or decoder change (tracked by their version counters)."""
        embedding = self.embedding
        if torch.is_grad_enabled():
            self.__dict__.pop("_cache", None)
            return embedding.weight
        params = list(embedding.parameters())
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = self.__dict__.get("_cache")
        if cached is None or cached[0] != key:
            cached = (key, embedding.weight)
            self.__dict__["_cache"] = cached
        return cached[1]

    def extra_repr(self) -> str:
        mode = "code-space" if self.embedding.head_in_code_space else "decoded"
        size = f"V={self.out_features}, k={self.embedding.code_dim}"
        if not self.tied:
            return f"own codes, {mode}, bias={self.bias is not None}"
        return f"tied to CompressedEmbedding({size}), {mode}, bias={self.bias is not None}"
