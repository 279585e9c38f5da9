"""Integer codes of variable bit width, packed by bit plane, each column with its own small codebook.

This file travels inside every saved checkpoint (remote code): it imports only torch.

Layout. Rows are grouped in *tiers* (e.g. the most frequent tokens get more bits). In tier `t`, column `i` holds
an unsigned integer of `bits[t][i]` bits (0 to 8) that indexes a codebook of `2 ** bits[t][i]` values; a 0-bit
column is a constant. Bit widths never increase from one column to the next, so bit plane `j` (bit `j` of every
value) covers a prefix of the columns, the `n_j` columns with more than `j` bits. A row of tier `t` stores plane 0,
then plane 1, ..., each packed 8 values per byte (little-endian within a byte) and padded to a whole byte:
`sum_j ceil(n_j / 8)` bytes. Stored tensors (all counted in the checkpoint's size): `planes.<t>` (uint8,
`rows_t x bytes_t`), `codebooks.<t>` (float, `sum_i 2 ** bits[t][i]`), `row_tiers` (uint8, one per row).

Codebooks written by `method="transform_coding"` lie on uniform grids (`grid_points`): that is what lets the runtime
layout (`packed_runtime`) compute a tied head's logits with integer matrix kernels, exactly. Any codebook still
decodes through `lookup`.
"""

import torch
from torch import nn

MAX_BITS = 8
#: Columns of up to this many bits keep their codebook on a 16-point grid, wider ones on a 256-point grid (see
#: `grid_points`), so that at run time each entry is a 4-bit or an 8-bit integer (`packed_runtime`).
INT4_MAX_BITS = 3


def grid_points(bits: int) -> int:
    """Points of the uniform grid that the codebook of a `bits`-bit column lies on: its values are
    `lo + (hi - lo) / (points - 1) * m` for integers `0 <= m < points`, with `lo` and `hi` its smallest and largest
    value. 16 for up to `INT4_MAX_BITS` bits, else 256.

    Example:

    ```python
    >>> grid_points(3), grid_points(4)
    (16, 256)
    ```
    """
    return 16 if bits <= INT4_MAX_BITS else 256


def check_layout(bits: list[list[int]], tier_sizes: list[int], num_rows: int) -> None:
    """Raise `ValueError` unless `bits` (one non-increasing list of ints in [0, 8] per tier, all of one length)
    and `tier_sizes` (one count per tier, summing to `num_rows`) describe a valid layout."""
    if not bits or len(bits) != len(tier_sizes) or len(bits) > 255:
        raise ValueError(
            f"Need one bit list per tier (1 to 255 tiers); got {len(bits)} lists, {len(tier_sizes)} sizes."
        )
    width = len(bits[0])
    for tier, widths in enumerate(bits):
        if len(widths) != width or not all(isinstance(b, int) and 0 <= b <= MAX_BITS for b in widths):
            raise ValueError(f"Tier {tier}: expected {width} integer bit widths in [0, {MAX_BITS}], got {widths!r}.")
        if any(a < b for a, b in zip(widths, widths[1:])):
            raise ValueError(f"Tier {tier}: bit widths must not increase from one column to the next.")
    if any(not isinstance(n, int) or n < 0 for n in tier_sizes) or sum(tier_sizes) != num_rows:
        raise ValueError(f"Tier sizes {tier_sizes} must be counts >= 0 summing to the {num_rows} rows.")


def _plane_widths(widths: list[int]) -> list[int]:
    """Columns covered by each bit plane: `n_j = #{i : bits_i > j}` for `j < max(bits)`."""
    return [sum(b > j for b in widths) for j in range(max(widths, default=0))]


def row_bytes(widths: list[int]) -> int:
    """Bytes one packed row of a tier with these column widths takes."""
    return sum((n + 7) // 8 for n in _plane_widths(widths))


def pack(values: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """Pack integer codes (`n x k`, column `i` < `2 ** widths[i]`) into bit planes (`n x row_bytes(widths)` uint8).

    Example:

    ```python
    >>> import torch
    >>> values = torch.tensor([[5, 2, 1, 0], [7, 0, 0, 0]])
    >>> unpack(pack(values, [3, 2, 1, 0]), [3, 2, 1, 0]).tolist()
    [[5, 2, 1, 0], [7, 0, 0, 0]]
    ```
    """
    values = values.to(torch.uint8)  # codes of at most 8 bits: a byte each, whatever the dtype they came in
    weights = 2 ** torch.arange(8, dtype=torch.uint8, device=values.device)
    planes = []
    for plane, count in enumerate(_plane_widths(widths)):
        bits = (values[:, :count] >> plane) & 1
        padded = torch.nn.functional.pad(bits, (0, (-count) % 8)).view(values.shape[0], -1, 8)
        planes.append((padded * weights).sum(-1, dtype=torch.uint8))
    if not planes:
        return torch.empty(values.shape[0], 0, dtype=torch.uint8, device=values.device)
    return torch.cat(planes, dim=1)


def unpack(packed: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """The integer codes (`n x k`, int64) of packed rows (`n x row_bytes(widths)` uint8); inverse of `pack`."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = ((packed.unsqueeze(-1) >> shifts) & 1).view(packed.shape[0], -1)  # uint8: one byte per bit
    values = torch.zeros(packed.shape[0], len(widths), dtype=torch.int64, device=packed.device)
    start = 0
    for plane, count in enumerate(_plane_widths(widths)):
        values[:, :count] |= bits[:, start : start + count].to(torch.int64) << plane
        start += ((count + 7) // 8) * 8
    return values


class PackedCodes(nn.Module):
    r"""
    `V x k` codes stored as variable-width integers (see the module docstring) and decoded through per-column
    codebooks into floats. `lookup(ids)` unpacks only the requested rows.

    Args:
        bits (`list[list[int]]`): per tier, the bit width of each column (non-increasing, 0 to 8).
        tier_sizes (`list[int]`): rows in each tier.
        device (`torch.device` or `str`, *optional*): where the tensors live.
        dtype (`torch.dtype`, *optional*): of the codebooks.

    Example:

    ```python
    >>> import torch
    >>> codes = PackedCodes([[2, 1], [1, 0]], [2, 1])
    >>> codes.set_codes(torch.tensor([[3, 1], [0, 0], [1, 0]]), torch.tensor([0, 0, 1]),
    ...                 [torch.tensor([-1.5, -0.5, 0.5, 1.5, -1.0, 1.0]), torch.tensor([-2.0, 2.0, 0.0])])
    >>> codes.lookup(torch.tensor([0, 2])).tolist()
    [[1.5, 1.0], [2.0, 0.0]]
    ```
    """

    def __init__(
        self,
        bits: list[list[int]],
        tier_sizes: list[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_layout(bits, tier_sizes, sum(tier_sizes))
        self.bits = [list(widths) for widths in bits]
        self.tier_sizes = list(tier_sizes)
        frozen = {"requires_grad": False}
        self.planes = nn.ParameterList(
            nn.Parameter(torch.zeros(n, row_bytes(w), dtype=torch.uint8, device=device), **frozen)
            for n, w in zip(tier_sizes, bits)
        )
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.zeros(sum(2**b for b in w), device=device, dtype=dtype), **frozen) for w in bits
        )
        self.row_tiers = nn.Parameter(torch.zeros(sum(tier_sizes), dtype=torch.uint8, device=device), **frozen)

    @property
    def num_rows(self) -> int:
        return self.row_tiers.shape[0]

    @property
    def width(self) -> int:
        return len(self.bits[0])

    @property
    def mean_bits(self) -> float:
        """Bits per code entry, averaged over every row and column."""
        return sum(n * sum(w) for n, w in zip(self.tier_sizes, self.bits)) / (self.num_rows * self.width)

    @torch.no_grad()
    def set_codes(self, values: torch.Tensor, row_tiers: torch.Tensor, codebooks: list[torch.Tensor]) -> None:
        """Store integer codes (`V x k`), the tier of every row and each tier's flat codebook (column `i`'s
        entries start at `sum_{i' < i} 2 ** bits[t][i']`)."""
        row_tiers = row_tiers.to(torch.int64).cpu()
        counts = torch.bincount(row_tiers, minlength=len(self.bits)).tolist()
        if values.shape != (self.num_rows, self.width) or counts != self.tier_sizes:
            raise ValueError(
                f"Expected {self.num_rows} x {self.width} codes with tier sizes {self.tier_sizes}; got "
                f"{tuple(values.shape)} with tier sizes {counts}."
            )
        for tier, widths in enumerate(self.bits):
            rows = values[row_tiers == tier]
            limit = torch.tensor([2**b for b in widths])
            if (rows < 0).any() or (rows >= limit).any():
                raise ValueError(f"Tier {tier}: a code does not fit its column's bit width.")
            if codebooks[tier].shape != self.codebooks[tier].shape:
                raise ValueError(f"Tier {tier}: expected a codebook of {self.codebooks[tier].numel()} values.")
            self.planes[tier].data = pack(rows, widths).to(self.planes[tier].device)
            self.codebooks[tier].data = codebooks[tier].to(self.codebooks[tier].device, self.codebooks[tier].dtype)
        self.row_tiers.data = row_tiers.to(self.row_tiers.device, torch.uint8)

    def _row_positions(self) -> torch.Tensor:
        """Each row's index inside its tier, derived from `row_tiers` and recomputed whenever that tensor changes
        (however the weights were loaded or moved)."""
        tiers = self.row_tiers
        key = (tiers.data_ptr(), tiers._version, tiers.device)
        if self.__dict__.get("_positions_key") != key:
            with torch.no_grad():
                tiers = tiers.to(torch.int64)
                positions = torch.zeros_like(tiers)
                for tier in range(len(self.bits)):
                    mask = tiers == tier
                    positions[mask] = torch.arange(int(mask.sum()), device=tiers.device)
            self.__dict__["_positions"], self.__dict__["_positions_key"] = positions, key
        return self.__dict__["_positions"]

    def _offsets(self, tier: int, device: torch.device) -> torch.Tensor:
        """Where each column's codebook starts in `codebooks[tier]` (derived from `bits`, never stored)."""
        cache = self.__dict__.setdefault("_offset_cache", {})
        if (tier, device) not in cache:
            sizes = torch.tensor([0] + [2**b for b in self.bits[tier][:-1]], dtype=torch.int64)
            cache[tier, device] = sizes.cumsum(0).to(device)
        return cache[tier, device]

    def lookup(self, ids: torch.Tensor, chunk_rows: int = 8192) -> torch.Tensor:
        """The decoded codes (`... x k`, codebook dtype) of the rows `ids` (unpacked `chunk_rows` at a time, so that
        decoding every row needs no more than a chunk's worth of bits at once)."""
        flat = ids.reshape(-1)
        if flat.shape[0] > chunk_rows:
            parts = [self.lookup(flat[start : start + chunk_rows]) for start in range(0, flat.shape[0], chunk_rows)]
            return torch.cat(parts).view(*ids.shape, self.width)
        tiers = self.row_tiers[flat].to(torch.int64)
        positions = self._row_positions()[flat]
        out = torch.empty(flat.shape[0], self.width, dtype=self.codebooks[0].dtype, device=flat.device)
        for tier, widths in enumerate(self.bits):
            mask = tiers == tier
            if not mask.any():
                continue
            values = unpack(self.planes[tier][positions[mask]], widths)
            out[mask] = self.codebooks[tier][self._offsets(tier, values.device) + values]
        return out.view(*ids.shape, self.width)

    def extra_repr(self) -> str:
        mean_bits = [sum(w) / len(w) for w in self.bits]
        tiers = ", ".join(f"{n} rows x {b:.2f} bits" for n, b in zip(self.tier_sizes, mean_bits))
        return f"width={self.width}, tiers=[{tiers}]"
