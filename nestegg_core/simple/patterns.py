"""Project name patterns as ``private_names`` and routes take them: names and fnmatch globs,
compared in the normalized form of PEP 503 names.

:func:`common_name` says whether two patterns can match one name (and gives one), which is how a
configuration is told that a name would have two homes.
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from collections.abc import Iterable

from packaging.utils import NormalizedName

from .models import is_valid_name

__all__ = ["NamePatterns", "common_name", "is_pattern", "normalize_pattern", "pattern_problem"]

#: the characters of a normalized name, letters first: the example names found read like names
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"
_SEPARATORS = "-_."
_STAR = "*"


def is_pattern(value: str) -> bool:
    return any(c in value for c in "*?[")


def normalize_pattern(pattern: str) -> str:
    """A name or fnmatch pattern in the form of the normalized names it is matched against (PEP
    503: lower case, a run of ``-``, ``_`` and ``.`` one ``-``), its ``*``, ``?`` and ``[...]``
    kept: ``acme_*`` matches ``acme-tools`` and ``Corp.[AB]*`` matches ``corp-api`` as meant.

    In a class a separator stands for ``-`` (a class of separators only, ``[._]``, is one), and
    ranges are lower-cased.
    """
    pieces: list[str | None] = []  # characters, wildcards and classes; None for a separator
    i = 0
    while i < len(pattern):
        char = pattern[i]
        end = _class_end(pattern, i) if char == "[" else None
        if end is None:
            pieces.append(None if char in _SEPARATORS else char.lower())
            i += 1
        else:
            pieces.append(_normalize_class(pattern[i + 1 : end]))
            i = end + 1
    # a run of separators is one, as in a normalized name
    kept = [p for k, p in enumerate(pieces) if p is not None or k == 0 or pieces[k - 1] is not None]
    return "".join("-" if piece is None else piece for piece in kept)


def _class_end(pattern: str, start: int) -> int | None:
    """Where the ``[`` class at ``start`` ends (its ``]``), as fnmatch reads it; None if it
    does not end (then ``[`` is a literal)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":  # a ']' first is a member
        j += 1
    end = pattern.find("]", j)
    return None if end < 0 else end


def _normalize_class(body: str) -> str | None:
    """The class ``[body]`` for normalized names (see :func:`normalize_pattern`); None when it
    is a separator."""
    negated = body.startswith("!")
    if negated:
        body = body[1:]
    members: list[str] = []
    separator = False
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":  # a range
            members.append(f"{body[k].lower()}-{body[k + 2].lower()}")
            k += 3
        elif body[k] in _SEPARATORS:
            separator = True
            k += 1
        else:
            members.append(body[k].lower())
            k += 1
    if separator and not members and not negated:
        return None
    # a '-' last is a member, not a range (first, it would end a class that starts with ']')
    return "[" + ("!" if negated else "") + "".join(members) + ("-" if separator else "") + "]"


class NamePatterns:
    """Names and patterns (any spelling), matched against normalized names."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(normalize_pattern(p) for p in patterns)
        self._exact = frozenset(p for p in self.patterns if not is_pattern(p))
        self._globs = [re.compile(fnmatch.translate(p)) for p in self.patterns if is_pattern(p)]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, name: NormalizedName | str) -> bool:
        return name in self._exact or any(p.match(name) for p in self._globs)


def _tokens(pattern: str) -> list[str | frozenset[str]]:
    """A normalized pattern as fnmatch reads it: ``*``, or the set of characters one place takes."""
    tokens: list[str | frozenset[str]] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        end = _class_end(pattern, i) if char == "[" else None
        if char == _STAR:
            tokens.append(_STAR)
        elif char == "?":
            tokens.append(frozenset(ALPHABET))
        elif end is not None:
            body = pattern[i : end + 1]
            tokens.append(frozenset(c for c in ALPHABET if fnmatch.fnmatchcase(c, body)))
            i = end
        else:
            tokens.append(frozenset(char) & frozenset(ALPHABET))
        i += 1
    return tokens


def common_name(first: str, second: str) -> str | None:
    """A shortest normalized name both patterns (normalized, see :func:`normalize_pattern`)
    match, or None when no name matches both."""
    a, b = _tokens(first), _tokens(second)
    # breadth first over the places reached in both patterns by the same characters (and
    # whether a character was taken yet: a name is not empty)
    start = (0, 0, False)
    came: dict[tuple[int, int, bool], tuple[tuple[int, int, bool], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        i, j, taken = state
        if i == len(a) and j == len(b) and taken:
            found = []
            step = came[state]
            while step is not None:
                state, char = step
                found.append(char)
                step = came[state]
            return "".join(reversed(found))
        moves: list[tuple[tuple[int, int, bool], str]] = []
        if i < len(a) and a[i] == _STAR:  # a star may match nothing more
            moves.append(((i + 1, j, taken), ""))
        if j < len(b) and b[j] == _STAR:
            moves.append(((i, j + 1, taken), ""))
        if i < len(a) and j < len(b):
            ta, tb = a[i], b[j]
            for char in ALPHABET:
                if (ta == _STAR or char in ta) and (tb == _STAR or char in tb):
                    after = (i if ta == _STAR else i + 1, j if tb == _STAR else j + 1, True)
                    moves.append((after, char))
        for target, char in moves:
            if target not in came:
                came[target] = (state, char)
                queue.append(target)
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` (as written) can be no name or pattern of project names; None if it can."""
    if not is_pattern(pattern):
        return None if is_valid_name(pattern) else "is not a valid project name"
    if common_name(normalize_pattern(pattern), _STAR) is None:
        return "matches no project name"
    return None
