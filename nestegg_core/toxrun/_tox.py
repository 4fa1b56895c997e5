"""The fence around tox: the one internal the plugin uses, its table of command handlers.

tox has no hook for the start and end of a session; the plugin runs the mirror around the handler
of the command (``state._options.cmd_handlers``), which ``tox.run.main`` looks up after the
plugins' ``tox_add_core_config``. Tested with tox 4.11 to 4.67 (``tox>=4.11,<5`` in setup.cfg);
``tests/test_fences.py`` fails, naming it, when the table moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tox.session.state import State

__all__ = ["Handler", "wrap_handler"]

Handler = Callable[["State"], int]


def wrap_handler(state: State, command: str, wrap: Callable[[Handler], Handler]) -> None:
    """Replace the handler of ``command`` in ``state``'s table by ``wrap(handler)``."""
    handlers: dict[str, Handler] = state._options.cmd_handlers
    handlers[command] = wrap(handlers[command])
