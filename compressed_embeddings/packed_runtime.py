"""The runtime layout of packed codes: a tied head's logits computed from small integer matrices.

This file travels inside every saved checkpoint (remote code): it imports only torch and single-dot siblings.

Transform coding keeps each codebook on a uniform grid (`packed_codes.grid_points`): in tier `t`, column `i` of row
`v` decodes to `lo[t, i] + step[t, i] * m[v, i]`, with `m` an integer below 16 (columns of up to 3 bits) or 256. A
tied head's logits are `h E^T = p Z^T + h . b` with `p = h W` (the decoder's weight `W`, bias `b`), so for the rows of
tier `t`

    logits[v] = p . lo[t] + sum_i (p_i step[t, i]) m[v, i]

a constant per tier plus the activations `p * step[t]` times an integer matrix, which PyTorch's weight-only kernels
multiply without expanding it: the columns of 4 bits or more as int8 (`torch._weight_int8pack_mm`), the narrower
ones as int4 (two per byte, `torch._weight_int4pack_mm_for_cpu`), columns of 0 bits not at all (their value is in
the constant). The integers are centred on the middle of their grid (`m - 128`, `m - 8`; the int4 kernel subtracts
the 8 itself) and the constant takes the centre, `p . (lo + centre * step)`, so that what the kernels return is the
small varying part of the logits. Both kernels take bf16 activations (fp32 ones run ~25x slower), so `p * step` is
rounded to bf16 and the products come back in bf16; the constant stays in float32. Only tensors this module
allocates reach the kernels (they need aligned memory; a tensor memory-mapped from a checkpoint can crash them).

`mode="exact"` (devices without these kernels, or on request) keeps every column in int8 and multiplies chunk by
chunk in the activations' own dtype: exact up to float rounding, a few rows' worth of floats at a time.

Either way no float `V x d` matrix is ever built: the runtime holds about one byte (int8) or half a byte (int4) per
code entry that has bits, plus a few floats per tier and column. The same integers serve the input lookups
(`lookup`), so a running model never reads the stored planes once the layout is built.
"""

import torch

from .packed_codes import INT4_MAX_BITS, PackedCodes, grid_points, unpack

INT8_ALIGN = 16  # columns of an int8 block: the CPU kernel needs a multiple of 16 (others crash it)
INT4_ROW_BLOCK = 64  # rows per block of the CPU int4 kernel's layout (it needs a multiple of 16)
INT4_GROUPS = (32, 64, 128, 256)  # group sizes the int4 kernel accepts (one scale and zero per group and row)
BUILD_ROWS = 128  # rows unpacked at a time while building (a multiple of INT4_ROW_BLOCK; small: few transients)
EXACT_CHUNK_ROWS = 4096  # rows multiplied at a time by expanding their integers (a multiple of INT4_ROW_BLOCK)
KERNEL_MAX_POSITIONS = 16  # the weight-only kernels' cost grows with the positions: beyond, expand chunks instead
MODES = ("kernels", "exact")


class GridError(ValueError):
    """A codebook does not lie on its grid (written by an older release, or edited), so the runtime cannot run it."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def grid_of(codebook: torch.Tensor, widths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(lo, step, levels)` of one tier's flat codebook: per column its smallest value and grid step (float32), and
    the grid position of every entry (int64). Raises `GridError` when an entry is off its grid by more than the
    codebook's dtype can round.

    Example:

    ```python
    >>> import torch
    >>> lo, step, levels = grid_of(torch.tensor([-1.0, -0.4, 1.0, 2.0, 5.0]), [2, 0])  # 2 bits: 16 points
    >>> lo.tolist(), levels.tolist()
    ([-1.0, 5.0], [0, 3, 10, 15, 0])
    ```
    """
    values = codebook.detach().to("cpu", torch.float64)
    resolution = 2.0 * torch.finfo(codebook.dtype).eps if codebook.is_floating_point() else 0.0
    los, steps, levels, start = [], [], [], 0
    for column, width in enumerate(widths):
        entries = values[start : start + 2**width]
        start += 2**width
        lo, hi = entries.min(), entries.max()
        step = (hi - lo) / (grid_points(width) - 1)
        position = torch.round((entries - lo) / step) if step > 0 else torch.zeros_like(entries)
        tolerance = resolution * max(lo.abs().item(), hi.abs().item()) + 1e-6 * step.item()
        if (lo + step * position - entries).abs().max().item() > tolerance:
            points = grid_points(width)
            raise GridError(f"column {column}: its {2**width} codebook values are not on a grid of {points}")
        los.append(lo)
        steps.append(step)
        levels.append(position.long())
    return torch.stack(los).float(), torch.stack(steps).float(), torch.cat(levels)


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    """`n x K` integers in [0, 16) (n a multiple of 64, K even) in the CPU int4 kernel's layout: blocks of 64 rows,
    within a block `K x 32` bytes, byte `(k, d)` holding row `d` (low nibble) and row `d + 32` (high) of column `k`."""
    n, k = values.shape
    blocks = values.to(torch.uint8).view(n // INT4_ROW_BLOCK, 2, INT4_ROW_BLOCK // 2, k)
    packed = blocks[:, 0] | (blocks[:, 1] << 4)
    return packed.transpose(1, 2).contiguous().view(n, k // 2)


def _unpack_int4_rows(packed: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The integers (`len(rows) x K`, uint8) of some rows (int64) of an int4 matrix packed by `_pack_int4`."""
    half = INT4_ROW_BLOCK // 2
    blocks = packed.view(-1, packed.shape[1] * 2, half)  # block, column, row within a half block
    within = rows % INT4_ROW_BLOCK
    shift = ((within // half) * 4).to(torch.uint8).unsqueeze(-1)
    return (blocks[rows // INT4_ROW_BLOCK, :, within % half] >> shift) & 15


def _unpack_int4_range(packed: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """The integers (`(stop - start) x K`, uint8) of rows `start:stop` (`start` a multiple of 64) of an int4
    matrix packed by `_pack_int4`."""
    k = packed.shape[1] * 2
    blocks = packed[start : _round_up(stop, INT4_ROW_BLOCK)].view(-1, k, INT4_ROW_BLOCK // 2)
    values = torch.stack([blocks & 15, blocks >> 4], dim=1)  # block, half, column, row within the half
    return values.transpose(2, 3).reshape(-1, k)[: stop - start]


_KERNELS_CHECKED: dict[str, bool] = {}


def kernels_available(device: torch.device) -> bool:
    """Whether this torch has the CPU int8 / int4 weight-only kernels, and they compute what this module expects
    on a small probe (int4: our packing is the kernel's layout). Checked once per process."""
    if device.type != "cpu":
        return False
    if "cpu" not in _KERNELS_CHECKED:
        _KERNELS_CHECKED["cpu"] = _probe_kernels()
    return _KERNELS_CHECKED["cpu"]


def _probe_kernels() -> bool:
    if not all(hasattr(torch, name) for name in ("_weight_int8pack_mm", "_weight_int4pack_mm_for_cpu")):
        return False
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(0, 16, (128, 64), generator=generator)
    activations = torch.randn(3, 64, generator=generator).bfloat16()
    expected = activations.float() @ values.float().T
    try:
        if not torch.equal(_pack_int4(values), torch._convert_weight_to_int4pack_for_cpu(values.int(), 1)):
            return False
        ones = torch.ones(128, dtype=torch.bfloat16)
        offset = 8 * activations.float().sum(-1, keepdim=True)
        wide = torch._weight_int8pack_mm(activations, (values - 8).to(torch.int8), ones).float() + offset
        narrow = torch._weight_int4pack_mm_for_cpu(activations, _pack_int4(values), 32, _scales_and_zeros(64, 128, 32))
        narrow = narrow.float() + offset
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    tolerance = 0.02 * expected.abs().max().item()
    return bool((wide - expected).abs().max() <= tolerance and (narrow - expected).abs().max() <= tolerance)


def _scales_and_zeros(columns: int, rows: int, group: int) -> torch.Tensor:
    """The int4 kernel's per-group scale 1 and zero 0 (it computes `(q - 8) * scale + zero`, here `q - 8`)."""
    table = torch.zeros(columns // group, rows, 2, dtype=torch.bfloat16)
    table[..., 0] = 1.0
    return table


def _int4_blocks(columns: int) -> list[tuple[int, int]]:
    """`(columns, group)` of the int4 blocks that store `columns` columns in the fewest bytes per row: blocks of 256
    (group 256), then the rest padded to the group that wastes least (half a byte per column, 4 bytes per group)."""
    blocks = [(256, 256)] * (columns // 256)
    rest = columns % 256
    if rest:
        group = min(INT4_GROUPS, key=lambda g: (_round_up(rest, g) / 2 + 4 * _round_up(rest, g) / g, g))
        blocks.append((_round_up(rest, group), group))
    return blocks


def _layout(widths: list[int], kernels: bool) -> tuple[int, list[tuple[int, int]]]:
    """How a tier's columns are stored: the first `wide` as int8 (every column of 4 bits or more, padded to a multiple
    of 16 with narrower ones), the rest of the columns with bits in int4 blocks, with the split that takes the fewest
    bytes per row. Without kernels, every column with bits in int8."""
    with_bits = sum(b > 0 for b in widths)
    if not kernels:
        return with_bits, []
    best = None
    first = _round_up(sum(b > INT4_MAX_BITS for b in widths), INT8_ALIGN)
    for wide in range(first, _round_up(with_bits, INT8_ALIGN) + 1, INT8_ALIGN):
        blocks = _int4_blocks(max(0, with_bits - wide))
        cost = wide + 2 * (wide > 0) + sum(columns / 2 + 4 * columns / group for columns, group in blocks)
        if best is None or cost < best[0]:
            best = (cost, wide, blocks)
    return best[1], best[2]


class _Int4Block:
    """Columns `[start, start + columns)` of a tier as int4 in the kernel's layout (rows padded to 64)."""

    def __init__(self, start: int, columns: int, group: int, rows: int, device) -> None:
        self.start, self.columns, self.group = start, columns, group
        padded = _round_up(rows, INT4_ROW_BLOCK)
        self.packed = torch.zeros(padded, columns // 2, dtype=torch.uint8, device=device)
        self.table = _scales_and_zeros(columns, padded, group).to(device)


class _TierRuntime:
    """One tier's integer matrices: `wide` (int8, `m - centre`) for columns `[0, wide_columns)`, then int4 blocks
    (`m`; the kernel subtracts the centre 8); columns past the code width are padding (activations 0), columns
    without bits are not stored (their value is in `origin`)."""

    def __init__(self, rows: int, widths: list[int], lo, step, kernels: bool, device) -> None:
        self.rows, self.width, self.step = rows, len(widths), step.to(device)
        self.wide_columns, blocks = _layout(widths, kernels)
        self.blocks, start = [], self.wide_columns
        for columns, group in blocks:
            self.blocks.append(_Int4Block(start, columns, group, rows, device))
            start += columns
        self.total = start
        #: the integer each column's grid positions are centred on: the middle of its grid (int4: 8, which the kernel
        #: subtracts)
        centres = [grid_points(b) // 2 if b else 0 for b in widths]
        self.centre = torch.tensor(centres + [0] * max(0, start - self.width), dtype=torch.float32, device=device)
        self.origin = lo.to(device) + self.centre[: self.width] * self.step  # the value of a centred 0
        wide = self.wide_columns
        self.wide = torch.zeros(rows, wide, dtype=torch.int8, device=device) if wide else None
        self.ones = torch.ones(rows, dtype=torch.bfloat16, device=device) if wide else None

    def nbytes(self) -> int:
        tensors = [self.step, self.centre, self.origin, self.wide, self.ones]
        tensors += [t for block in self.blocks for t in (block.packed, block.table)]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def fill(self, start: int, values: torch.Tensor) -> None:
        """Store the grid positions `m` of rows `start : start + len(values)` (`start` a multiple of 64)."""
        values = torch.nn.functional.pad(values, (0, max(0, self.total - values.shape[1])))
        if self.wide is not None:
            centre = self.centre[: self.wide_columns].long()
            self.wide[start : start + len(values)] = (values[:, : self.wide_columns] - centre).to(torch.int8)
        for block in self.blocks:
            narrow = values[:, block.start : block.start + block.columns]
            narrow = torch.nn.functional.pad(narrow, (0, 0, 0, _round_up(len(narrow), INT4_ROW_BLOCK) - len(narrow)))
            block.packed[start : start + len(narrow)] = _pack_int4(narrow)

    def _centred(self, wide: torch.Tensor | None, narrow: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """Centred grid positions `m - centre` (`rows x total`, in `dtype`) from the int8 part and the int4 blocks'
        unpacked integers of the same rows."""
        parts = [] if wide is None else [wide.to(dtype)]
        parts += [values.to(dtype) - 8 for values in narrow]
        rows = len(wide) if wide is not None else (len(narrow[0]) if narrow else 0)
        return torch.cat(parts, dim=-1) if parts else torch.zeros(rows, 0, dtype=dtype, device=self.step.device)

    def centred_range(self, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
        """`m - centre` of rows `start:stop` (`start` a multiple of 64)."""
        wide = None if self.wide is None else self.wide[start:stop]
        return self._centred(wide, [_unpack_int4_range(b.packed, start, stop) for b in self.blocks], dtype)

    def codes(self, rows: torch.Tensor) -> torch.Tensor:
        """The decoded codes (`len(rows) x width`, float32) of rows (tier-local indices)."""
        out = self.origin.expand(len(rows), -1).clone()
        stored = min(self.total, self.width)
        if stored:
            wide = None if self.wide is None else self.wide[rows]
            centred = self._centred(wide, [_unpack_int4_rows(b.packed, rows) for b in self.blocks], torch.float32)
            out[:, :stored] += self.step[:stored] * centred[:, :stored]
        return out

    def logits(self, p: torch.Tensor, kernels: bool) -> torch.Tensor:
        """`p . origin + (p * step) . (m - centre)` for every row of the tier (`M x rows`, float32); `p` is `M x k`.
        With `kernels`, a few positions go through the weight-only kernels and many (whose cost grows with `M`)
        through chunks of the integers expanded to bf16; without, chunks in `p`'s dtype."""
        out = (p.float() @ self.origin).unsqueeze(-1).expand(-1, self.rows)
        scaled = torch.nn.functional.pad(p.float() * self.step, (0, max(0, self.total - self.width)))
        scaled = scaled[:, : self.total]
        if not kernels or p.shape[0] > KERNEL_MAX_POSITIONS:
            out, dtype = out.clone(), torch.bfloat16 if kernels else p.dtype
            scaled = scaled.to(dtype)
            for start in range(0, self.rows, EXACT_CHUNK_ROWS):
                stop = min(start + EXACT_CHUNK_ROWS, self.rows)
                out[:, start:stop] += (scaled @ self.centred_range(start, stop, dtype).T).float()
            return out
        scaled = scaled.bfloat16()
        products = []
        if self.wide is not None:
            products.append(
                torch._weight_int8pack_mm(scaled[:, : self.wide_columns].contiguous(), self.wide, self.ones)
            )
        for block in self.blocks:
            narrow = scaled[:, block.start : block.start + block.columns].contiguous()
            products.append(torch._weight_int4pack_mm_for_cpu(narrow, block.packed, block.group, block.table))
        if not products:
            return out
        total = products[0][:, : self.rows].float()
        for product in products[1:]:
            total += product[:, : self.rows]
        return total.add_(out[:, :1])  # the constant, one per position


class PackedRuntime:
    r"""
    The runtime layout of a [`PackedCodes`]: per tier, the grid positions of its codes as int8 and int4 matrices, and
    each column's grid (see the module docstring). Built from the stored planes and codebooks; stores nothing in
    checkpoints. `logits` is a tied head's product, `lookup` the input side (a few rows).

    Args:
        packed (`PackedCodes`): the stored codes, whose codebooks lie on their grids.
        mode (`str`, *optional*, defaults to `"kernels"`): `"kernels"` (int8 / int4 weight-only kernels with bf16
            activations; falls back to `"exact"` where they are missing) or `"exact"`.
        read_planes (`Callable[[int, int, int], torch.Tensor]`, *optional*): `(tier, start, stop) -> rows` of a
            tier's planes, to build from another copy of them than `packed.planes` (e.g. read from the checkpoint
            file, so that the memory-mapped planes are never paged in).

    Example:

    ```python
    >>> import torch
    >>> codes = PackedCodes([[2, 1]], [64])
    >>> codes.set_codes(torch.randint(0, 2, (64, 2)), torch.zeros(64, dtype=torch.long),
    ...                 [torch.tensor([-1.0, 0.0, 1.0, 2.0, -0.5, 0.5])])
    >>> runtime = PackedRuntime(codes, mode="exact")
    >>> torch.allclose(runtime.logits(torch.ones(1, 2)), torch.ones(1, 2) @ codes.lookup(torch.arange(64)).T)
    True
    ```
    """

    def __init__(self, packed: PackedCodes, mode: str = "kernels", read_planes=None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        device = packed.row_tiers.device
        self.kernels = mode == "kernels" and kernels_available(device)
        self.num_rows, self.width = packed.num_rows, packed.width
        self.row_tiers = packed.row_tiers
        tiers = packed.row_tiers.long()
        self.offsets = torch.tensor([0, *packed.tier_sizes], device=device).cumsum(0)
        self.identity = len(packed.tier_sizes) == 1  # one tier: rows already in vocabulary order
        #: where each vocabulary row sits in the tier-by-tier concatenation of the tiers' logits (int32; not needed
        #: for one tier)
        self.inverse = torch.empty(0 if self.identity else self.num_rows, dtype=torch.int32, device=device)
        for tier, size in enumerate(packed.tier_sizes if not self.identity else ()):
            rows = (tiers == tier).nonzero().squeeze(1)
            self.inverse[rows] = torch.arange(size, device=device, dtype=torch.int32) + int(self.offsets[tier])
        read_planes = read_planes or (lambda tier, start, stop: packed.planes[tier][start:stop])
        self.tiers = [
            self._build_tier(packed, tier, widths, read_planes, device) for tier, widths in enumerate(packed.bits)
        ]

    def _build_tier(self, packed, tier, widths, read_planes, device) -> _TierRuntime:
        lo, step, levels = grid_of(packed.codebooks[tier], widths)
        rows = packed.tier_sizes[tier]
        runtime = _TierRuntime(rows, widths, lo, step, self.kernels, device)
        starts = torch.tensor([0] + [2**b for b in widths[:-1]]).cumsum(0).to(device)
        levels = levels.to(device)
        kept = sum(b > 0 for b in widths)
        for start in range(0, rows, BUILD_ROWS):
            codes = unpack(read_planes(tier, start, min(start + BUILD_ROWS, rows)).to(device), widths)[:, :kept]
            runtime.fill(start, levels[starts[:kept] + codes])
        return runtime

    def nbytes(self) -> int:
        """Bytes the runtime holds (integer matrices, grids, the kernels' tables, the row order)."""
        return sum(t.nbytes() for t in self.tiers) + self.inverse.numel() * self.inverse.element_size()

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        """`p Z^T` (`... x V`, float32) for the decoded codes `Z` of every row, `p` being `... x k` (the head's hidden
        states times the decoder's weight)."""
        flat = p.reshape(-1, self.width)
        parts = [tier.logits(flat, self.kernels) for tier in self.tiers]
        out = parts[0] if self.identity else torch.cat(parts, dim=-1).index_select(-1, self.inverse)
        return out.reshape(*p.shape[:-1], self.num_rows)

    def lookup(self, ids: torch.Tensor, chunk_rows: int = 8192) -> torch.Tensor:
        """The decoded codes (`... x k`, float32) of the rows `ids`, from the integer matrices (`chunk_rows` at a
        time, so that decoding every row needs no more than a chunk's worth of integers at once)."""
        flat = ids.reshape(-1)
        if flat.shape[0] > chunk_rows:
            parts = [self.lookup(flat[start : start + chunk_rows]) for start in range(0, flat.shape[0], chunk_rows)]
            return torch.cat(parts).view(*ids.shape, self.width)
        if self.identity:
            return self.tiers[0].codes(flat).view(*ids.shape, self.width)
        tiers = self.row_tiers[flat].long()
        local = self.inverse[flat].long() - self.offsets[tiers]
        out = torch.empty(flat.shape[0], self.width, device=flat.device)
        for tier in torch.unique(tiers).tolist():
            selected = (tiers == tier).nonzero().squeeze(1)
            out[selected] = self.tiers[tier].codes(local[selected])
        return out.view(*ids.shape, self.width)
