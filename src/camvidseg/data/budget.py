"""What unpacking and decoding may write: an archive's members and the decoded pictures are held
to the same limits (a ratio to the source's bytes, a size in GiB, the free disk) before a byte
is written."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..core.errors import UserError


def shown_name(name: str, limit: int = 80) -> str:
    """A member name for an error line: crafted archives use names of hundreds of characters."""
    return repr(name) if len(name) <= limit else repr(name[: limit // 2] + "..." + name[-20:])


class UnpackBudget:
    """Refuses an archive whose members declare more bytes than the limits allow, before the
    member that crosses them is written: a high ratio to the archive's size is a decompression
    bomb (CamVid's PNG/JPEG images do not compress), and nothing may fill the disk. The convert
    stage holds what decoding writes to the same limits (convert.DecodeBudget)."""

    RATIO_FLOOR = 64 * 2**20  # tiny archives of text compress well; below this, ratio is no sign
    SOURCE = "the archive's"  # whose bytes the ratio is taken of

    def __init__(self, parts: list[Path], dest: Path, max_ratio: float, max_gib: float):
        self.archive, self.total = parts[0], 0
        size = sum(part.stat().st_size for part in parts)
        ratio_limit = max(max_ratio * size, self.RATIO_FLOOR)
        self.limits = [
            (ratio_limit, f"{max_ratio:g}x {self.SOURCE} {size} bytes (dataset.max_unpack_ratio)"),
            (max_gib * 2**30, f"dataset.max_unpack_gib ({max_gib:g} GiB)"),
            (shutil.disk_usage(dest).free, f"the free space on the disk of {dest}"),
        ]

    def add(self, name: str, size: int) -> None:
        self.total += size
        for limit, what in self.limits:
            if self.total > limit:
                raise self.refusal(name, what)

    def refusal(self, name: str, what: str) -> UserError:
        return UserError(
            f"{self.archive}: refusing to unpack: members up to {shown_name(name)} declare "
            f"{self.total} bytes, more than {what}"
        )
