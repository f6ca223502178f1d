"""One-line errors for the user instead of tracebacks."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input or environment; its message is the whole story."""


# Writes the environment refuses (not a bug of the program), with the reason a user acts on.
REFUSED_WRITES = {
    errno.EFBIG: "over the file-size limit (ulimit -f)",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "over the disk quota",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (a read-only or immutable folder?)",
    errno.ENAMETOOLONG: "a file name too long for the file system",
}


def refused_write(err: OSError, path: object) -> UserError | None:
    """The one-line error for a write to ``path`` the environment refused, else None."""
    reason = REFUSED_WRITES.get(err.errno)
    return UserError(f"{path}: cannot write: {reason}") if reason else None


def one_line(message: str) -> str:
    """``message`` with what a terminal would act on (newlines, escapes, other control
    characters, say in a file name from an archive) written as escapes: the error stays one line
    and shows the name as it is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def cli(main: Callable[[list[str] | None], None]) -> Callable[[list[str] | None], int]:
    """Wrap a stage's ``main`` so a UserError prints one line and exits 2 (running out of
    memory: one line, exit 1)."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            main(argv)
        except UserError as err:
            print(f"error: {one_line(str(err))}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as err:  # a write outside atomic_path (which names its output itself)
            refusal = refused_write(err, err.filename or "a file")
            if refusal is None:
                raise
            print(f"error: {one_line(str(refusal))}", file=sys.stderr)
            raise SystemExit(2) from None
        except MemoryError as err:  # numpy's says how much it wanted, for an array of what shape
            stage = main.__module__.rsplit(".", 1)[-1]
            print(f"error: {stage}: out of memory ({one_line(str(err))})", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        return 0

    return wrapper
