"""tox hooks of nestegg: every install of a tox run goes through an in-process nestegg mirror.

Only the hooks live here; what they do is :mod:`nestegg_core.toxrun`. tox has no hook for the start
and end of a session, so the mirror runs around the selected command's handler
(:mod:`nestegg_core.toxrun._tox`): environments are configured inside it (so they all see the
running mirror) and it returns only after the last one, ``tox p`` included.

Importing this module imports tox's and :mod:`nestegg_core.toxrun.settings` only: the mirror
(waitress, requests, the cache) is loaded by a command that installs, never by ``tox -l``.
"""

from __future__ import annotations

import atexit
import fnmatch
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tox.plugin import impl
from tox.report import HandledError

from nestegg_core.toxrun import _tox
from nestegg_core.toxrun.settings import (
    DISABLE_HINT,
    INDEX_VARIABLES,
    command_installs,
    provision_warning,
    resolve_settings,
)

if TYPE_CHECKING:
    from argparse import Namespace

    from tox.config.cli.parser import ToxParser
    from tox.config.sets import ConfigSet, EnvConfigSet
    from tox.session.state import State

    from nestegg_core.toxrun.run import ToxRun

logger = logging.getLogger(__name__)


class _Active:
    """The run's mirror while a command handler runs (module state survives in-process tox runs)."""

    run: ToxRun | None = None


#: `uv sync --locked` fails when the index differs from the one in uv.lock
_LOCK_RUNNERS = frozenset({"uv-venv-lock-runner"})


def _stop_current() -> None:
    run, _Active.run = _Active.run, None
    if run is not None:
        run.stop()


atexit.register(_stop_current)  # safety net: the handler's `finally` is what stops it


@impl
def tox_add_option(parser: ToxParser) -> None:
    # called twice per run (a preliminary parser, then the real one): declarations only
    parser.add_argument(
        "--no-nestegg", dest="no_nestegg", action="store_true",
        help="install without the nestegg mirror (also TOX_NO_NESTEGG=1)",
    )  # fmt: skip
    parser.add_argument(
        "--nestegg-config", dest="nestegg_config", metavar="PATH", type=Path, of_type=Path | None,
        default=None, help="nestegg.yml of the mirror (default: tox's nestegg_config, else nestegg's lookup)",
    )  # fmt: skip
    parser.add_argument(
        "--nestegg-offline", dest="nestegg_offline", action="store_true",
        help="install from nestegg's cache only; never ask the upstream index",
    )  # fmt: skip
    parser.add_argument(
        "--nestegg-refresh", dest="nestegg_refresh", action="store_true",
        help="revalidate every cached index page with the upstream now",
    )  # fmt: skip


@impl
def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
    core_conf.add_config(
        keys=["nestegg"], of_type=bool, default=True,
        desc="install through an in-process nestegg mirror (--no-nestegg turns it off for a run)",
    )  # fmt: skip
    core_conf.add_config(
        keys=["nestegg_config"], of_type=str, default="",
        desc="nestegg.yml of the mirror, relative to the tox root (default: nestegg's own lookup)",
    )  # fmt: skip
    core_conf.add_config(
        keys=["nestegg_offline"], of_type=bool, default=False,
        desc="install from nestegg's cache only (like --nestegg-offline)",
    )  # fmt: skip
    core_conf.add_config(
        keys=["nestegg_refresh"], of_type=bool, default=False,
        desc="revalidate every cached index page at the start (like --nestegg-refresh)",
    )  # fmt: skip
    _stop_current()  # left over from an earlier in-process run that did not get to its end
    opts = state.conf.options
    only_lists = any(getattr(opts, key, False) for key in ("list_envs", "list_envs_all", "show_config"))
    if opts.no_nestegg or not command_installs(opts.command, only_lists=only_lists):
        return
    _warn_of_provisioning(core_conf, opts)

    # no public session start/end hook: wrap the handler main() looks up after provisioning
    def mirrored(handler: _tox.Handler) -> _tox.Handler:
        def with_mirror(state: State) -> int:
            _Active.run = run = _start(core_conf, opts)
            try:
                if run is not None:
                    run.build_sources()  # before any environment installs; a line per project
                return handler(state)
            finally:
                _stop_current()

        return with_mirror

    _tox.wrap_handler(state, opts.command, mirrored)


def _warn_of_provisioning(core_conf: ConfigSet, opts: Namespace) -> None:
    # tox added `requires` just before this hook and provisions after it when they are unmet
    if "requires" not in core_conf or not core_conf["nestegg"]:
        return
    try:
        requires = core_conf["requires"]
    except Exception as exc:  # noqa: BLE001 - tox reports a broken `requires` itself, where it reads it
        logger.debug("nestegg: cannot read [tox] requires: %s", exc)
        return
    line = provision_warning(requires, no_provision=getattr(opts, "no_provision", False))
    if line is not None:
        logger.warning("%s", line)


def _start(core_conf: ConfigSet, opts: Namespace) -> ToxRun | None:
    settings = resolve_settings(
        no_nestegg=opts.no_nestegg,
        config_option=opts.nestegg_config,
        offline_option=opts.nestegg_offline,
        refresh_option=opts.nestegg_refresh,
        enabled=core_conf["nestegg"],
        config_key=core_conf["nestegg_config"],
        offline_key=core_conf["nestegg_offline"],
        refresh_key=core_conf["nestegg_refresh"],
        root=Path(core_conf["tox_root"]),
    )
    if not settings.enabled:
        return None
    # the mirror, loaded only now: tox -l and the other commands that install nothing never do
    from nestegg_core.errors import NesteggError  # noqa: PLC0415
    from nestegg_core.toxrun.run import ToxRun, load_tox_config  # noqa: PLC0415

    try:
        config = load_tox_config(settings, root=Path(core_conf["tox_root"]))
        run = ToxRun(
            config,
            work_dir=Path(core_conf["work_dir"]),
            refresh=settings.refresh,
            access_log=getattr(opts, "verbosity", 2) >= 4,  # -vv: tox shows debug output
        ).start()
    except NesteggError as exc:
        raise HandledError(f"nestegg: {exc}; {DISABLE_HINT}") from None
    except OSError as exc:  # the cache directory cannot be made or written
        where = f" {exc.filename!r}" if exc.filename else ""
        raise HandledError(
            f"nestegg: cannot use the cache{where}: {exc.strerror or exc}; {DISABLE_HINT}"
        ) from None
    logger.warning("%s", run.describe())
    return run


@impl
def tox_add_env_config(env_conf: EnvConfigSet, state: State) -> None:  # noqa: ARG001 - hook signature
    # run environments and package environments (.pkg) alike
    env_conf.add_config(
        keys=["nestegg"], of_type=bool, default=True,
        desc="install this environment's packages through the nestegg mirror (when it runs)",
    )  # fmt: skip
    run = _Active.run
    if run is None or not env_conf["nestegg"]:
        return
    if "runner" in env_conf and env_conf["runner"] in _LOCK_RUNNERS:
        logger.info("nestegg: %s uses uv.lock's index, not the mirror", env_conf.name)
        return
    set_env = env_conf["set_env"]
    try:
        own = {name: set_env.load(name) for name in INDEX_VARIABLES if name in set_env}
    except Exception as exc:  # noqa: BLE001 - tox reports a broken set_env itself, where it reads it
        logger.debug("nestegg: cannot read the set_env of %s: %s", env_conf.name, exc)
        own = {}
    values = run.variables(own, _passes(env_conf["pass_env"]))
    if hasattr(set_env, "export"):
        # exported values win over `file|` lines and {[x]set_env} substitutions, resolved later
        set_env.export({name: _constant(value) for name, value in values.items()})
    else:  # tox before 4.67
        set_env.update(values, override=True)


def _passes(patterns: list[str]) -> Callable[[str], bool]:
    compiled = [re.compile(fnmatch.translate(p), re.IGNORECASE) for p in patterns]  # as tox matches
    return lambda name: any(p.match(name) for p in compiled)


def _constant(value: str) -> Callable[[], str]:
    return lambda: value
