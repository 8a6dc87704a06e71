"""The one base class of the errors clipsam_ros raises on purpose, and the one-line rule.

Every such error's message is ONE line that names the key, file or value at fault
and says how to fix it: the node logs it as one line, the CLI prints it as one
line on stderr. `one_line` makes any exception (ours or a library's, whose text
may span lines) into such a line for logs, verdicts and the CLI.

Each subclass also derives from the builtin a caller would naturally catch
(ValueError for bad values, RuntimeError for unusable files), so catching either
works.
"""
from __future__ import annotations


def one_line(exc: BaseException | str, limit: int = 400, with_type: bool = False) -> str:
    """`exc` as one line of at most `limit` characters: whitespace runs (newlines too) become
    one space; an empty text becomes the type's name; `with_type` prefixes `Type: `."""
    text = " ".join(str(exc).split())
    if isinstance(exc, BaseException):
        if not text:
            text = type(exc).__name__
        elif with_type:
            text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ClipsamError(Exception):
    """Base of every error raised on purpose; str(exc) is one line (see `one_line`)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(message, limit=2000))
