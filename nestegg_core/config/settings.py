"""Each setting declared once: the fields of :class:`~nestegg_core.config.config.Config` carry
their declaration (:func:`setting`), and the rest is made from it.

A declaration names how a value of ``nestegg.yml`` is read and checked (its :class:`Kind`), what
the setting does, the YAML keys besides its name, the command-line option that sets it and the
sub-commands that take that option, and its ``NESTEGG_*`` variable. From the declarations come
the validation of ``nestegg.yml`` (one-line errors naming file and key), the options of
``nestegg`` and their ``--help``, the variables it and ``nestegg_core.wsgi`` read and the
list of settings in the README (:func:`settings_rst`, which ``tests/test_config.py`` compares).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestegg_core.errors import ConfigError
from nestegg_core.urls import mask_text, mask_url

from .sizes import format_size, parse_size

__all__ = ["Kind", "Reader", "Setting", "add_options", "declared", "setting", "settings_rst"]

#: how a front server can be told to send a cached file itself (see ``Config.sendfile``)
SENDFILE_MODES = ("x-accel-redirect", "x-sendfile")


class WrittenInt(int):
    """An integer of a YAML file that keeps its text (``010``), for a setting read as a string."""

    written: str


class WrittenFloat(float):
    """A float of a YAML file that keeps its text (``1.10``), for a setting read as a string."""

    written: str


class Reader:
    """Type checks that raise one-line errors naming the file and the dotted key path."""

    def __init__(self, file: str, base: Path | None = None, *, secrets: Collection[str] = ()) -> None:
        self.file = file
        #: what relative paths in the file are relative to
        self.base = base or Path.cwd()
        #: the keys whose values are secret (``ci_token``): an error shows their type only
        self.secrets = frozenset(key.replace("-", "_") for key in secrets)

    def error(self, path: str, message: str) -> ConfigError:
        # a key may be a URL written where a setting's name goes
        return ConfigError(f"{self.file}: {mask_text(path) or 'top level'}: {message}")

    def describe(self, value: Any, path: str) -> str:
        """``value``, read at ``path``, as an error shows it (see :func:`describe`)."""
        secret = path.rpartition(".")[2].replace("-", "_") in self.secrets
        return describe(value, secret=secret, hidden=self.secrets)

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.error(path, f"expected a mapping, got {self.describe(value, path)}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(path, f"expected a list, got {self.describe(value, path)}")
        return value

    def only(self, value: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in value:
            if key.replace("-", "_") not in allowed:
                choices = ", ".join(sorted(allowed))
                where = f"{path}.{key}" if path else key
                raise self.error(where, f"unknown key {mask_text(key)!r} (known: {choices})")

    def string(self, value: Any, path: str) -> str:
        # YAML reads a tag like 1.0 as a float: accept scalars, as the seed's configs rely on it,
        # as they were written (1.10 is no 1.1, 010 no 8)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
            raise self.error(path, f"expected a non-empty string, got {self.describe(value, path)}")
        return value.written if isinstance(value, (WrittenInt, WrittenFloat)) else str(value)

    def integer(self, value: Any, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {self.describe(value, path)}")
        if minimum is not None and value < minimum:
            raise self.error(path, f"expected an integer >= {minimum}, got {value!r}")
        return int(value)

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise self.error(path, f"expected a number of seconds >= 0, got {self.describe(value, path)}")
        return float(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected yes/no (true/false), got {self.describe(value, path)}")
        return value


def describe(value: Any, *, secret: bool = False, hidden: Collection[str] = ()) -> str:
    """A value of the file as an error message shows it: a ``secret`` one by its type alone, any
    other without the credentials of a URL in it, nor what it holds under a key in ``hidden``."""
    if value is None:
        return "nothing"
    value = plain(value)
    if secret and value != "":
        return type(value).__name__
    return f"{type(value).__name__} {_masked(value, hidden)!r}"


def plain(value: Any) -> Any:
    """``value``, a number of a YAML file (:class:`WrittenInt`, :class:`WrittenFloat`) as a plain one."""
    if isinstance(value, WrittenInt):
        return int(value)
    return float(value) if isinstance(value, WrittenFloat) else value


def _masked(value: Any, hidden: Collection[str]) -> Any:
    """``value`` with each string's URLs masked (a whole string as one URL too: its password may
    hold a blank) and ``***`` for what a key in ``hidden`` holds, at any depth."""
    if isinstance(value, str):
        return mask_text(mask_url(value))
    if isinstance(value, dict):
        return {
            _masked(key, hidden): "***" if str(key).replace("-", "_") in hidden else _masked(item, hidden)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_masked(item, hidden) for item in value]
    return value


@dataclass(frozen=True)
class Kind:
    """How a setting's value is read from ``nestegg.yml``, and what the README calls it."""

    #: what a value is, for a person: "seconds", "a size like 500M"
    what: str
    #: the value of the raw YAML ``value`` at key ``path``, or the reader's error
    read: Callable[[Reader, Any, str], Any]


def _path(reader: Reader, raw: Any, path: str) -> Path:
    return reader.base / Path(os.path.expandvars(reader.string(raw, path))).expanduser()


def _port(reader: Reader, raw: Any, path: str) -> int:
    port = reader.integer(raw, path)
    if not 0 <= port <= 65535:
        raise reader.error(path, f"expected a port number 0-65535, got {port!r}")
    return port


def _timeout(reader: Reader, raw: Any, path: str) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw <= 0:
        # a socket timeout of 0 fails every request
        raise reader.error(path, f"expected a number of seconds > 0, got {raw!r}")
    return reader.number(raw, path)


#: worker threads at most: each holds a stack and a connection; past a few hundred they only wait
#: on each other (100,000 took 380 MB and 5 s before the interpreter could start no more)
MAX_THREADS = 512


def _threads(reader: Reader, raw: Any, path: str) -> int:
    threads = reader.integer(raw, path, minimum=1)
    if threads > MAX_THREADS:
        raise reader.error(path, f"expected an integer 1-{MAX_THREADS}, got {threads!r}")
    return threads


def _size(reader: Reader, raw: Any, path: str) -> int:
    try:
        return parse_size(plain(raw))
    except ValueError as exc:
        raise reader.error(path, str(exc)) from None


def _size_or_no(reader: Reader, raw: Any, path: str) -> int:
    """A size, or 0 for ``0`` or ``no`` (turned off)."""
    raw = plain(raw)
    if raw is False or (type(raw) is int and raw == 0) or (isinstance(raw, str) and raw.strip() == "0"):
        return 0
    return _size(reader, raw, path)


def _names(reader: Reader, raw: Any, path: str) -> tuple[str, ...]:
    return tuple(reader.string(item, f"{path}[{i}]") for i, item in enumerate(reader.sequence(raw, path)))


def _token(reader: Reader, raw: Any, path: str) -> str:
    token = reader.string(raw, path)
    if len(token) < 16:  # the message never shows the secret
        raise reader.error(path, f"expected a token of at least 16 characters, got {len(token)}")
    return token


def _sendfile(reader: Reader, raw: Any, path: str) -> str | None:
    mode = None if raw is False else reader.string(raw, path).lower()
    if mode is not None and mode not in SENDFILE_MODES:
        raise reader.error(path, f"expected {' or '.join(SENDFILE_MODES)} (or no), got {mode!r}")
    return mode


def _url_path(reader: Reader, raw: Any, path: str) -> str:
    prefix = reader.string(raw, path)
    if not re.fullmatch(r"/[A-Za-z0-9._~!=+/-]*", prefix):
        raise reader.error(path, f"expected a URL path like '/_nestegg/', got {prefix!r}")
    return prefix.rstrip("/") + "/"


#: the kinds of value settings have
PATH = Kind("a path, relative to the file", _path)
STRING = Kind("a string", Reader.string)
PORT = Kind("a port number 0-65535", _port)
SECONDS = Kind("seconds", Reader.number)
TIMEOUT = Kind("seconds > 0", _timeout)
SIZE = Kind("a size like 500M or 20G", _size)
SIZE_OR_NO = Kind("a size like 500M or 20G, or no", _size_or_no)
COUNT = Kind("an integer >= 1", lambda reader, raw, path: reader.integer(raw, path, minimum=1))
THREADS = Kind(f"an integer 1-{MAX_THREADS}", _threads)
BOOLEAN = Kind("yes or no", Reader.boolean)
NAMES = Kind("a list of names and glob patterns", _names)
TOKEN = Kind("a secret of 16 characters or more", _token)
SENDFILE = Kind(f"{' or '.join(SENDFILE_MODES)}, or no", _sendfile)
URL_PATH = Kind("a URL path", _url_path)


@dataclass(frozen=True, kw_only=True)
class Setting:
    """The declaration of a setting (the field it is declared on gives its name, type and default)."""

    kind: Kind
    #: what it does, one sentence for ``--help`` and the README
    description: str
    #: more YAML keys for it (any key may also be spelled with dashes: ``index-url``)
    aliases: tuple[str, ...] = ()
    #: the command-line option that sets it, its metavar, and the sub-commands that take it (none:
    #: every command, before its name)
    option: str | None = None
    metavar: str | None = None
    commands: tuple[str, ...] = ()
    #: the variable that sets it for the command line (under its option) and ``nestegg_core.wsgi``
    variable: str | None = None
    #: the default as people read it, where the field's default says too little or too much
    default_text: str | None = None
    #: its value is never shown: not in reprs, nor in the file's errors
    secret: bool = False


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, secret: bool = False,
            **declaration: Any) -> Any:  # fmt: skip
    """A field of ``Config`` with its :class:`Setting` (``secret`` ones stay out of reprs and errors)."""
    return dataclasses.field(
        default=default,
        default_factory=factory,
        repr=not secret,
        metadata={"setting": Setting(secret=secret, **declaration)},
    )


def declared(config_class: type) -> Iterator[tuple[dataclasses.Field[Any], Setting]]:
    """The fields of ``config_class`` that are settings, in their order, with their declarations."""
    for field in dataclasses.fields(config_class):
        declaration = field.metadata.get("setting")
        if isinstance(declaration, Setting):
            yield field, declaration


def keys(config_class: type) -> dict[str, str]:
    """Every YAML key a setting answers to (dashes read as underscores), and the setting's name."""
    found = {}
    for field, declaration in declared(config_class):
        for key in (field.name, *declaration.aliases):
            found[key.replace("-", "_")] = field.name
    return found


def secret_keys(config_class: type) -> set[str]:
    """The YAML keys of the settings whose values are secret (dashes read as underscores)."""
    secret = {field.name for field, declaration in declared(config_class) if declaration.secret}
    return {key for key, name in keys(config_class).items() if name in secret}


def default_text(field: dataclasses.Field[Any], declaration: Setting) -> str:
    """The default of a setting as the README and ``--help`` say it."""
    if declaration.default_text is not None:
        return declaration.default_text
    value = field.default
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if declaration.kind in (SIZE, SIZE_OR_NO) and isinstance(value, int):
        return format_size(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type,
    command: str | None,
    *,
    suppress: bool = False,
) -> None:
    """Add the options of the settings that ``command`` takes (None: the global ones); with
    ``suppress``, an option not given sets nothing (a sub-command's copy of a global option must
    not undo the value given before the sub-command)."""
    for field, declaration in declared(config_class):
        if declaration.option is None:
            continue
        if (declaration.commands and command not in declaration.commands) or (
            command is not None and not declaration.commands
        ):
            continue
        help_text = f"{declaration.description} [{field.name}, default {default_text(field, declaration)}]"
        if declaration.kind is BOOLEAN:
            parser.add_argument(declaration.option, dest=field.name, action="store_true",
                                default=argparse.SUPPRESS if suppress else None, help=help_text)  # fmt: skip
        else:
            parser.add_argument(
                declaration.option,
                dest=field.name,
                metavar=declaration.metavar,
                type=int if declaration.kind in (PORT, COUNT, THREADS) else str,
                default=argparse.SUPPRESS if suppress else None,
                help=help_text,
            )


def option_values(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The settings the options of ``args`` give (None where an option was not given)."""
    return {
        field.name: getattr(args, field.name, None)
        for field, declaration in declared(config_class)
        if declaration.option is not None
    }


def settings_rst(config_class: type) -> str:
    """The README's list of the settings of ``nestegg.yml``, as reStructuredText."""
    lines = []
    for field, declaration in declared(config_class):
        also = [f"``{alias}``" for alias in declaration.aliases]
        if declaration.option:
            scope = f" of {', '.join(declaration.commands)}" if declaration.commands else ""
            also.append(f"``{declaration.option}``{scope}")
        if declaration.variable:
            also.append(f"``${declaration.variable}``")
        extra = f"; also {', '.join(also)}" if also else ""
        lines.append(
            f"``{field.name}`` ({declaration.kind.what}; default {default_text(field, declaration)}{extra})"
        )
        lines.append(f"    {declaration.description}")
    return "\n".join(lines) + "\n"
