"""Event-type globs, matched in linear time (contract section 5: ``event_types``).

``*`` matches any run of characters, dots included (``pro.atmos.*`` matches
``pro.atmos.billing.invoice_paid``); every other character is literal; a glob
matches the whole type, case-sensitively. On the alphabet the API accepts
(``[a-z0-9_.*]``) this is exactly :func:`fnmatch.fnmatchcase`.

No regular expression: a backtracking engine takes exponential time on globs
such as ``*********x``, and a worker matches on its event loop every glob that
any tenant stored. Here a glob is cut at its stars into literal pieces; the
first piece must open the text, the last must close it, and the pieces between
are found left to right, each at its earliest place (which is always safe for
``*``-only patterns). Each piece is one ``str.find``, so a match costs
O(len(text) x pieces) at worst, whatever the glob, with runs of stars counting
as one. The API bounds what it accepts (:data:`MAX_GLOB_LENGTH`,
:data:`MAX_GLOB_STARS`, :data:`MAX_GLOBS`); globs stored before those bounds,
or written to the topic by other means, are still matched in linear time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_GLOBS", "MAX_GLOB_LENGTH", "MAX_GLOB_STARS", "Glob", "GlobSet", "glob_problem"]

#: Bounds of what the API accepts, per destination and per glob.
MAX_GLOBS: Final = 50
MAX_GLOB_LENGTH: Final = 200
MAX_GLOB_STARS: Final = 8


@dataclass(frozen=True, slots=True)
class Glob:
    """One glob, cut at its stars: ``head*middle*...*tail``."""

    head: str
    middle: tuple[str, ...]
    tail: str
    #: False when the glob has no star: then it is ``head`` exactly.
    starred: bool

    @classmethod
    def parse(cls, glob: str) -> Glob:
        pieces = glob.split("*")
        if len(pieces) == 1:
            return cls(glob, (), "", starred=False)
        middle = tuple(piece for piece in pieces[1:-1] if piece)  # runs of stars are one
        return cls(pieces[0], middle, pieces[-1], starred=True)

    def matches(self, text: str) -> bool:
        if not self.starred:
            return text == self.head
        if len(text) < len(self.head) + len(self.tail) or not text.startswith(self.head) \
                or not text.endswith(self.tail):
            return False
        position, end = len(self.head), len(text) - len(self.tail)
        for piece in self.middle:
            found = text.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True


@dataclass(frozen=True, slots=True)
class GlobSet:
    """A destination's globs: a type matches when any of them does."""

    globs: tuple[Glob, ...]

    @classmethod
    def compile(cls, globs: Iterable[str]) -> GlobSet | None:
        """The set of ``globs``; None when there are none (every type matches)."""
        parsed = tuple(dict.fromkeys(Glob.parse(glob) for glob in globs))
        return cls(parsed) if parsed else None

    def matches(self, text: str) -> bool:
        return any(glob.matches(text) for glob in self.globs)


def glob_problem(glob: str) -> str | None:
    """Why the API refuses ``glob`` on length or stars, or None if those are fine."""
    if len(glob) > MAX_GLOB_LENGTH:
        return f"longer than {MAX_GLOB_LENGTH} characters"
    if glob.count("*") > MAX_GLOB_STARS:
        return f"more than {MAX_GLOB_STARS} '*'"
    return None
