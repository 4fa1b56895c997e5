"""Tag and branch names as git and hg allow them: what a source build's ``tag`` and a CI ``watch``
may be, checked when the config is read and again before git or hg is asked.

A revision expression (``v1~2``, ``HEAD^``, ``@{u}``, ``main:path``, hg's ``tip``) names no tag:
taken as one, it would build some other commit under the version. git's rules are those of
``git check-ref-format`` (for ``refs/tags/<name>``), hg's those of ``hg tag``.
"""

from __future__ import annotations

import re

#: characters git allows in no ref name: each makes a revision expression or a pattern
_GIT_FORBIDDEN = "~^:?*[\\"
#: characters of hg's revset operators, calls, strings and subscripts (``first(all())``,
#: ``a&b``, ``x~1``, ``'x'``, ``x#y[0]``): hg evaluates a name holding one as a revset where it
#: can (``hg identify --rev`` of a local repository, as CI polls it), so it names no tag of ours
_HG_FORBIDDEN = "()[]&|!~^%,=#'\"\\"
_HEX_ID = re.compile(r"[0-9a-fA-F]{40}")


def ref_problem(name: str, repo_type: str, *, head: bool = False) -> str | None:
    """Why ``name`` cannot be a tag or branch of a ``repo_type`` repository; None if it can be.

    ``head``: git's ``HEAD`` (the default branch, which CI watches) is allowed too.
    """
    if not name:
        return "it is empty"
    if name.startswith("-"):
        return "it would be read as an option"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a blank or a control character"
    if repo_type == "hg":
        return _hg_problem(name)
    if name == "HEAD" and not head:
        return "HEAD is no tag: name the tag (or branch) to build"
    return _git_problem(name)


def _git_problem(name: str) -> str | None:
    forbidden = "".join(sorted({c for c in name if c in _GIT_FORBIDDEN}))
    if forbidden:
        return f"git names hold no {forbidden!r}: it reads as a revision expression, not a tag"
    if "@{" in name or name == "@":
        return "git names hold no '@{' and are not '@': it reads as a revision expression, not a tag"
    if ".." in name:
        return "git names hold no '..': it reads as a range of commits, not a tag"
    parts = name.split("/")
    if any(not part for part in parts):
        return "git names neither start nor end with '/', nor hold '//'"
    if any(part.startswith(".") or part.endswith(".lock") for part in parts) or name.endswith("."):
        return "no part of a git name starts with '.' or ends with '.lock', nor does it end with '.'"
    return None


def _hg_problem(name: str) -> str | None:
    if ":" in name:
        return "hg names hold no ':': it reads as a range of revisions, not a tag"
    forbidden = "".join(sorted({c for c in name if c in _HG_FORBIDDEN}))
    if forbidden:
        return f"a name holding {forbidden!r} reads as an hg revset, not a tag"
    if _HEX_ID.fullmatch(name):  # hg looks a full id up before any name
        return "it is a commit id, not a tag: name the tag (or branch) to build"
    if name in ("tip", "null", "."):
        return f"{name!r} is a revision hg reserves, not a tag: name the tag (or branch) to build"
    if "_" not in name:  # hg's own test: int() reads 1_0 as 10, hg takes it as a name
        try:
            int(name)
        except ValueError:
            return None
        return "hg names are no whole numbers: it reads as a revision number, not a tag"
    return None
