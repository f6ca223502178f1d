"""One-line errors for the user instead of tracebacks."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input or environment; its message is the whole story."""


def cli(main: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], int]:
    """Wrap a stage's ``main`` so a UserError prints one line and exits 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        return 0

    return wrapper
