"""HTML of the web interface: small functions from values to markup, with every value escaped.

Markup is built with :func:`h`, which formats a template written here with its arguments
HTML-escaped, unless an argument is :class:`Safe` (markup made by :func:`h` itself). So a
project name, a filename, a ref or a log line can never become markup. Pages have no scripts
(the Content-Security-Policy forbids them) and one inline style sheet.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from nestegg_core.urls import mask_text

if TYPE_CHECKING:
    from nestegg_core.builds.runs import Run
    from nestegg_core.config.config import SourceBuild

    from .web import BuildStatus, Description, Pages, Summary, VersionRows

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: the word a badge shows for the newest finished run's outcome
BADGE_WORDS = {
    "passed": "passing",
    "failed": "failing",
    "timeout": "timed out",
    "error": "error",
    "interrupted": "interrupted",
}
_BADGE_COLOURS = {
    "passing": "#3c8a2e",
    "failing": "#c53b2c",
    "timed out": "#d9822b",
    "error": "#8e44ad",
    "interrupted": "#7a7a7a",
    "unknown": "#9f9f9f",
}


class Safe(str):
    """Text that is markup already: :func:`h` inserts it as it is."""

    __slots__ = ()


def esc(value: object) -> str:
    if isinstance(value, Safe):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def h(template: str, /, *args: object, **values: object) -> Safe:
    """``template`` (written in this module, never from outside) with every value escaped."""
    return Safe(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Safe]) -> Safe:
    return Safe("".join(parts))


# pieces -----------------------------------------------------------------------------------------


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def iso_when(value: str | None) -> str:
    """A PEP 700 time (``2024-01-02T03:04:05.678Z``) to the minute."""
    if not value:
        return "—"
    return value[:16].replace("T", " ") + " UTC" if len(value) >= 16 else value


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)  # pragma: no cover - the loop always returns


def outcome(value: str | None, href: str | None = None) -> Safe:
    if value is None:
        return h('<span class="muted">—</span>')
    if href is None:
        return h('<span class="pill {0}">{0}</span>', value)
    return h('<a class="pill {0}" href="{1}">{0}</a>', value, href)


def url(root: str, *segments: str, **query: str | int | None) -> str:
    path = "/".join(quote(segment, safe="") for segment in segments)
    params = [(k, str(v)) for k, v in query.items() if v not in (None, "")]
    return f"{root}/ui/{path}" + (f"?{urlencode(params)}" if params else "")


def pager(root: str, segments: Sequence[str], pages: Pages, **query: str | int | None) -> Safe:
    if pages.pages <= 1 and pages.page == 1:
        return Safe("")
    per_page = pages.per_page if pages.per_page != _default_per_page(segments) else None
    links = []
    if pages.page > 1:
        # from past the last page, to the last
        previous = min(pages.page - 1, pages.pages)
        links.append(
            h(
                '<a rel="prev" href="{}">« previous</a>',
                url(root, *segments, **query, page=previous, per_page=per_page),
            )
        )
    links.append(h("<span>page {} of {} ({} in all)</span>", pages.page, pages.pages, pages.total))
    if pages.page < pages.pages:
        links.append(
            h(
                '<a rel="next" href="{}">next »</a>',
                url(root, *segments, **query, page=pages.page + 1, per_page=per_page),
            )
        )
    return h('<nav class="pager">{}</nav>', join(links))


def past(pages: Pages, what: str) -> str:
    """What a page past the last shows instead of its items."""
    last = f"the last is page {pages.pages}" if pages.pages > 1 else "there is one"
    return f"No {what} on page {pages.page}: {last}."


def _default_per_page(segments: Sequence[str]) -> int:
    return 20 if segments and segments[0] == "project" else 50


def commit_text(commit: str | None) -> Safe:
    if not commit:
        return h('<span class="muted">—</span>')
    return h('<code title="{0}">{1}</code>', commit, commit[:12])


def env_list(run: Run) -> Safe:
    return join(h('<span class="env {}">{}</span>', env.outcome, env.name) for env in run.envs)


# pages ------------------------------------------------------------------------------------------


def layout(*, root: str, title: str, body: Safe, json_url: str, version: str, refresh: bool) -> str:
    return h(
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}'
        '<link rel="icon" href="data:,">'
        "<title>{title} · nestegg</title><style>{css}</style></head>\n"
        '<body><header><a class="brand" href="{home}">nestegg</a>'
        '<nav><a href="{home}">Projects</a><a href="{ci}">CI</a></nav></header>\n'
        "<main>{body}</main>\n"
        '<footer>nestegg {version} · read-only · <a href="{json}">this page as JSON</a></footer>'
        "</body></html>\n",
        refresh=Safe('<meta http-equiv="refresh" content="5">') if refresh else "",
        title=title,
        css=Safe(_CSS),
        home=url(root, ""),
        ci=url(root, "ci"),
        body=body,
        version=version,
        json=json_url,
    )


def home(
    *,
    root: str,
    shown: list[Summary],
    latest: Mapping[str, Run],
    pages: Pages,
    query: str,
    kind: str,
    index_url: str,
) -> Safe:
    options = join(
        h('<option value="{}"{}>{}</option>', value, Safe(" selected") if value == kind else "", label)
        for value, label in (("", "all kinds"), ("private", "private"), ("mirror", "mirrored"))
    )
    rows = []
    for summary in shown:
        run = latest.get(summary.name)
        rows.append(
            h(
                '<tr><td><a class="project" href="{href}">{name}</a></td>'
                '<td><span class="kind {kind_class}">{kind}</span></td><td class="index">{index}</td>'
                "<td>{latest}</td>"
                '<td class="num">{versions}</td><td class="num">{files}</td>'
                '<td class="when">{updated}</td><td>{ci}</td></tr>',
                href=url(root, "project", summary.name),
                name=summary.name,
                kind=summary.kind,
                kind_class=summary.kind.replace("+", "-"),
                index=summary.index,
                latest=summary.latest or "—",
                versions=summary.versions,
                files=summary.files_here,
                updated=iso_when(summary.updated),
                ci=outcome(run.outcome, url(root, "ci", run.project, str(run.id))) if run else outcome(None),
            )
        )
    table = (
        h(
            '<table class="projects"><thead><tr><th>Project</th><th>Kind</th><th>From</th><th>Latest</th>'
            '<th class="num">Versions</th><th class="num">Files here</th><th>Updated</th><th>CI</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            join(rows),
        )
        if rows
        else h('<p class="empty">{}</p>', past(pages, "project"))
        if pages.total
        else h(
            '<p class="empty">No project{}.</p>', " matches" if query or kind else " yet: install something"
        )
    )
    return h(
        '<h1>Projects <span class="count">{total}</span></h1>'
        '<p class="hint">Use <code>{index}</code> as the index URL. Everything listed here is in this nest: '
        "cached from the upstream or private.</p>"
        '<form class="filter" method="get" action="{action}">'
        '<input type="search" name="q" value="{query}" placeholder="filter by name" '
        'aria-label="filter by name">'
        '<select name="kind" aria-label="kind">{options}</select>'
        '<button type="submit">Filter</button></form>{table}{pager}',
        total=pages.total,
        index=index_url,
        action=url(root, ""),
        query=query,
        options=options,
        table=table,
        pager=pager(root, [""], pages, q=query, kind=kind),
    )


def project(
    *,
    root: str,
    name: str,
    kind: str,
    versions: list[VersionRows],
    pages: Pages,
    only_here: bool,
    build: SourceBuild | None,
    last: Run | None,
    index_url: str,
    source: str = "",
    status: BuildStatus | None = None,
    description: Description | None = None,
) -> Safe:
    parts = [
        h(
            '<h1>{name} <span class="kind {kind_class}">{kind}</span></h1>'
            '<p class="hint">from <code class="index">{source}</code></p>'
            '<p class="hint"><code>pip install --index-url {index} {name}</code></p>',
            name=name,
            source=source,
            kind=kind,
            kind_class=kind.replace("+", "-"),
            index=index_url,
        )
    ]
    if description is not None:
        parts.append(long_description(root, name, description))
    if build is not None:
        parts.append(source_build(root, build, last, status))
    toggle = (
        h('<a href="{}">show every version the index lists</a>', url(root, "project", name))
        if only_here
        else h('<a href="{}">show only files stored here</a>', url(root, "project", name, here=1))
    )
    parts.append(h('<p class="toggle">{}</p>', toggle))
    rows = []
    cut = False
    for entry in versions:
        rows.append(h('<tr class="version"><th colspan="6" id="v-{0}">{0}</th></tr>', entry.version))
        if not entry.files:
            rows.append(h('<tr><td colspan="6" class="muted">no files</td></tr>'))
        for row in entry.files:
            dist = row.dist
            if row.origin == "built":
                origin = h(
                    'built from <code>{ref}</code> at {commit}<span class="muted"> {at}</span>',
                    ref=row.ref or "?",
                    commit=commit_text(row.commit),
                    at=iso_when(row.built_at),
                )
            else:
                origin = h("{}", row.origin)
            yanked = (
                h(' <span class="pill failed" title="{0}">yanked</span>', dist.yanked)
                if dist.yanked is not None
                else ""
            )
            rows.append(
                h(
                    '<tr class="{cls}"><td class="file">{filename}{yanked}</td><td class="num">{size}</td>'
                    '<td><code class="hash">{sha}</code></td><td class="when">{uploaded}</td>'
                    "<td>{origin}</td><td>{here}</td></tr>",
                    cls="here" if row.here else "elsewhere",
                    filename=dist.filename,
                    yanked=yanked,
                    size=size(dist.size),
                    sha=dist.sha256 or "—",
                    uploaded=iso_when(dist.upload_time),
                    origin=origin,
                    here="stored here" if row.here else "not cached",
                )
            )
        if entry.more_files:
            rows.append(h('<tr><td colspan="6" class="muted">and {} more files</td></tr>', entry.more_files))
            cut = True
    if rows:
        parts.append(
            h(
                '<table class="files"><thead><tr><th>File</th><th class="num">Size</th><th>SHA-256</th>'
                "<th>Uploaded</th><th>Origin</th><th>Here</th></tr></thead><tbody>{}</tbody></table>",
                join(rows),
            )
        )
    elif pages.total:
        parts.append(h('<p class="empty">{}</p>', past(pages, "version")))
    else:
        parts.append(h('<p class="empty">No files{}.</p>', " stored here" if only_here else ""))
    if cut and pages.per_page > 1:
        parts.append(
            h('<p class="hint">Files are left out: fewer versions a page (per_page) show more of each.</p>')
        )
    parts.append(pager(root, ["project", name], pages, here=1 if only_here else None))
    return join(parts)


def build_status(status: BuildStatus) -> Safe:
    """The last fetch of a source build and the versions that fail, as rows of its list."""
    fetched = (
        h("{}", iso_when(status.fetched_at)) if status.fetched_at else h('<span class="muted">never</span>')
    )
    parts = [h("<dt>Fetched</dt><dd>{}</dd>", fetched)]
    if status.fetch_error:
        parts.append(
            h('<dt>Last fetch</dt><dd><span class="pill failed">failed</span> {}</dd>', status.fetch_error)
        )
    for version, error in sorted(status.failed.items()):
        parts.append(h('<dt>{}</dt><dd><span class="pill failed">failing</span> {}</dd>', version, error))
    return join(parts)


def long_description(root: str, name: str, description: Description) -> Safe:
    """A version's description as written (no markup of it is rendered), cut where it is long."""
    kind = h(' <span class="muted">({}, shown as written)</span>', description.content_type)
    cut = (
        h(
            '<p class="hint">Cut here: {more} more characters. The whole description is in '
            '<a href="{json}">the JSON API</a>.</p>',
            more=f"{description.cut:,}",
            json=f"{root}/pypi/{quote(name, safe='')}/{quote(description.version, safe='')}/json",
        )
        if description.cut
        else ""
    )
    return h(
        '<section class="description"><h2>Description of {version}{kind}</h2>'
        '<pre class="description">{text}</pre>{cut}</section>',
        version=description.version,
        kind=kind if description.content_type else "",
        text=description.text,
        cut=cut,
    )


def source_build(root: str, build: SourceBuild, last: Run | None, status: BuildStatus | None = None) -> Safe:
    tags = ", ".join(f"{v.version} ({v.tag})" for v in build.versions) or "none"
    ci = build.ci
    if ci is None:
        ci_text = h("no CI settings (runs start from the trigger URL or <code>nestegg ci</code>)")
    else:
        every = f"every {duration(ci.interval)}" if ci.interval else "not polled"
        ci_text = h(
            "<code>{command}</code> on {watch}, {every}, time limit {limit}",
            command=ci.command,
            watch=", ".join(ci.watch) or "the default branch",
            every=every,
            limit=duration(ci.timeout),
        )
    return h(
        '<section class="build"><h2>Source build</h2><dl>'
        "<dt>Repository</dt><dd><code>{url}</code> ({kind})</dd>"
        "<dt>Versions</dt><dd>{tags}</dd>{status}"
        "<dt>CI</dt><dd>{ci}</dd>"
        '<dt>Last run</dt><dd>{last} <a href="{runs}"><img class="badge" alt="CI status" src="{badge}"></a> '
        '<a href="{runs}">all runs</a></dd></dl></section>',
        url=mask_text(build.repo_url),
        kind=build.repo_type,
        tags=tags,
        status=build_status(status) if status is not None else Safe(""),
        ci=ci_text,
        last=outcome(last.outcome, url(root, "ci", last.project, str(last.id))) if last else outcome(None),
        runs=url(root, "ci", build.name),
        badge=url(root, "badge", f"{build.name}.svg"),
    )


def runs_table(root: str, runs: list[Run], *, with_project: bool, pages: Pages | None = None) -> Safe:
    if not runs:
        if pages is not None and pages.total and pages.page > pages.pages:
            return h('<p class="empty">{}</p>', past(pages, "run"))
        return h('<p class="empty">No runs yet.</p>')
    rows = []
    for run in runs:
        href = url(root, "ci", run.project, str(run.id))
        project_cell = (
            h('<td><a href="{}">{}</a></td>', url(root, "ci", run.project), run.project)
            if with_project
            else ""
        )
        rows.append(
            h(
                '<tr><td><a href="{href}">#{id}</a></td>{project}<td><code>{ref}</code></td>'
                '<td>{commit}</td><td>{trigger}</td><td class="when">{started}</td>'
                '<td class="num">{duration}</td><td>{outcome}</td><td>{envs}</td></tr>',
                href=href,
                id=run.id,
                project=project_cell,
                ref=run.ref,
                commit=commit_text(run.commit),
                trigger=run.trigger,
                started=when(run.started or run.queued),
                duration=duration(run.duration),
                outcome=outcome(run.outcome, href),
                envs=env_list(run),
            )
        )
    head = "<th>Project</th>" if with_project else ""
    return h(
        '<table class="runs"><thead><tr><th>Run</th>{head}<th>Ref</th><th>Commit</th><th>Trigger</th>'
        '<th>Started</th><th class="num">Duration</th><th>Outcome</th><th>Environments</th>'
        "</tr></thead><tbody>{rows}</tbody></table>",
        head=Safe(head),
        rows=join(rows),
    )


def ci(
    *, root: str, builds: list[SourceBuild], latest: Mapping[str, Run], runs: list[Run], pages: Pages
) -> Safe:
    rows = []
    for build in builds:
        run = latest.get(build.name)
        settings = build.ci
        rows.append(
            h(
                '<tr><td><a href="{runs}">{name}</a></td><td><code>{url}</code></td><td>{watch}</td>'
                "<td><code>{command}</code></td><td>{every}</td><td>{last}</td>"
                '<td><img class="badge" alt="CI status of {name}" src="{badge}"></td></tr>',
                runs=url(root, "ci", build.name),
                name=build.name,
                url=mask_text(build.repo_url),
                watch=", ".join(settings.watch) if settings and settings.watch else "default branch",
                command=settings.command if settings else "tox",
                every=duration(settings.interval) if settings and settings.interval else "trigger / CLI only",
                last=outcome(run.outcome, url(root, "ci", run.project, str(run.id)))
                if run
                else outcome(None),
                badge=url(root, "badge", f"{build.name}.svg"),
            )
        )
    builds_table = (
        h(
            '<table class="builds"><thead><tr><th>Project</th><th>Repository</th><th>Watches</th>'
            "<th>Command</th><th>Polled every</th><th>Last run</th><th>Badge</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            join(rows),
        )
        if rows
        else h('<p class="empty">No source builds are configured.</p>')
    )
    return h(
        "<h1>Continuous integration</h1><h2>Source builds</h2>{builds}<h2>Runs</h2>{runs}{pager}",
        builds=builds_table,
        runs=runs_table(root, runs, with_project=True, pages=pages),
        pager=pager(root, ["ci"], pages),
    )


def ci_project(
    *, root: str, name: str, build: SourceBuild | None, last: Run | None, runs: list[Run], pages: Pages
) -> Safe:
    return h(
        '<h1>CI of <a href="{project}">{name}</a> <img class="badge" alt="CI status" src="{badge}"></h1>'
        '<p class="hint">Start a run with <code>nestegg ci {name}</code> or <code>POST {trigger}</code> '
        "(with the CI token).</p>{build}<h2>Runs</h2>{runs}{pager}",
        build=source_build(root, build, last) if build is not None else "",
        project=url(root, "project", name),
        name=name,
        badge=url(root, "badge", f"{name}.svg"),
        trigger=f"{root}/ci/trigger/{name}",
        runs=runs_table(root, runs, with_project=False, pages=pages),
        pager=pager(root, ["ci", name], pages),
    )


def run(*, root: str, run: Run, build: SourceBuild | None, log: str) -> Safe:
    envs = join(
        h(
            '<tr><td>{name}</td><td>{outcome}</td><td class="num">{code}</td>'
            '<td class="num">{duration}</td></tr>',
            name=env.name,
            outcome=outcome(env.outcome),
            code="—" if env.exit_code is None else env.exit_code,
            duration=duration(env.duration),
        )
        for env in run.envs
    )
    envs_table = (
        h(
            '<h2>Environments</h2><table class="envs"><thead><tr><th>Environment</th><th>Outcome</th>'
            '<th class="num">Exit code</th><th class="num">Duration</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            envs,
        )
        if run.envs
        else Safe("")
    )
    repo = h(" of <code>{}</code>", mask_text(build.repo_url)) if build is not None else ""
    return h(
        '<h1>Run #{id} of <a href="{runs}">{name}</a> {outcome}</h1><dl class="run">'
        "<dt>Ref</dt><dd><code>{ref}</code>{repo}</dd><dt>Commit</dt><dd><code>{commit}</code></dd>"
        "<dt>Trigger</dt><dd>{trigger}</dd><dt>Queued</dt><dd>{queued}</dd><dt>Started</dt><dd>{started}</dd>"
        "<dt>Duration</dt><dd>{duration}</dd><dt>Exit code</dt><dd>{code}</dd>"
        "<dt>Message</dt><dd>{message}</dd></dl>"
        '{envs}<h2>Log <a class="small" href="{raw}">as text</a></h2><pre class="log">{log}</pre>',
        id=run.id,
        runs=url(root, "ci", run.project),
        name=run.project,
        outcome=outcome(run.outcome),
        ref=run.ref,
        repo=repo,
        commit=run.commit or "not resolved yet",
        trigger=run.trigger,
        queued=when(run.queued),
        started=when(run.started),
        duration=duration(run.duration),
        code="—" if run.exit_code is None else run.exit_code,
        message=run.message or "—",
        envs=envs_table,
        raw=url(root, "ci", run.project, str(run.id), "log"),
        log=log or "(no log yet)",
    )


def badge(label: str, message: str) -> str:
    """A flat status badge as SVG (text widths estimated for an 11px sans-serif)."""
    colour = _BADGE_COLOURS.get(message, _BADGE_COLOURS["unknown"])
    left, right = _text_width(label) + 10, _text_width(message) + 10
    total = left + right
    return h(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        'aria-label="{label}: {message}">'
        "<title>{label}: {message}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        '<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        '<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        '<rect x="{left}" width="{right}" height="20" fill="{colour}"/><rect width="{total}" height="20" '
        'fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" '
        'font-size="11">'
        '<text x="{lx}" y="14">{label}</text><text x="{rx}" y="14">{message}</text></g></svg>',
        total=total,
        left=left,
        right=right,
        colour=colour,
        label=label,
        message=message,
        lx=left / 2,
        rx=left + right / 2,
    )


def _text_width(text: str) -> int:
    return int(sum(7.5 if c in "mwMW" else 3.5 if c in "ilt.: " else 6.8 for c in text)) + 2


_CSS = """
:root { --fg: #1d232a; --muted: #69727d; --line: #e3e6ea; --bg: #fff; --accent: #2f6f9f; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); }
header { display: flex; align-items: center; gap: 2em; padding: .7em 2em; background: #23364a; color: #fff; }
header a { color: #fff; text-decoration: none; }
header .brand { font-weight: 700; font-size: 1.2em; letter-spacing: .02em; }
header nav a { margin-right: 1.2em; opacity: .85; }
header nav a:hover { opacity: 1; text-decoration: underline; }
main { padding: 1em 2em 2em; max-width: 1400px; }
footer { padding: 1em 2em; color: var(--muted); font-size: .85em; border-top: 1px solid var(--line); }
a { color: var(--accent); }
h1 { font-size: 1.6em; margin: .4em 0 .3em; }
h1 .count { font-size: .6em; color: var(--muted); font-weight: 400; }
h2 { font-size: 1.15em; margin: 1.4em 0 .5em; }
.hint { color: var(--muted); margin: .2em 0 1em; }
.muted { color: var(--muted); }
.small { font-size: .7em; font-weight: 400; }
code { font: .9em/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code.hash { font-size: .75em; word-break: break-all; color: #444; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { font-size: .8em; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
td.num, th.num { text-align: right; white-space: nowrap; }
td.when { white-space: nowrap; }
tr.version th { background: #f4f6f8; font-size: 1em; padding-top: .6em; }
tr.elsewhere td { color: var(--muted); }
td.file { word-break: break-all; }
.filter { display: flex; gap: .5em; margin: 0 0 1em; }
.filter input { flex: 0 1 24em; padding: .35em .5em; font: inherit; border: 1px solid #c5cbd2;
  border-radius: 4px; }
.filter select, .filter button { font: inherit; padding: .3em .6em; border: 1px solid #c5cbd2;
  border-radius: 4px; background: #f7f8fa; }
.kind { display: inline-block; padding: 0 .45em; border-radius: 3px; font-size: .8rem; background: #e8eef5;
  color: #2f4f6f; }
.kind.private { background: #f3e8f7; color: #6b2f86; }
.kind.private-mirror { background: #fbefe1; color: #8a5214; }
.pill { display: inline-block; padding: 0 .5em; border-radius: 9px; font-size: .8rem; color: #fff;
  background: #9f9f9f; text-decoration: none; }
.pill.passed { background: #3c8a2e; } .pill.failed { background: #c53b2c; }
.pill.timeout { background: #d9822b; }
.pill.error { background: #8e44ad; } .pill.running, .pill.queued { background: #2f6f9f; }
.pill.skipped { background: #9f9f9f; }
.env { display: inline-block; margin-right: .4em; font-size: .85em; }
.env::before { content: "●"; margin-right: .2em; color: #9f9f9f; }
.env.passed::before { color: #3c8a2e; } .env.failed::before { color: #c53b2c; }
.pager { display: flex; gap: 1.2em; align-items: center; margin: 1em 0; }
.empty { color: var(--muted); font-style: italic; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1.2em; margin: .5em 0 1em; }
dt { color: var(--muted); }
dd { margin: 0; }
img.badge { vertical-align: middle; }
pre.log { background: #1e2329; color: #dfe3e8; padding: 1em; overflow: auto; max-height: 70vh;
  font: .82em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
  word-break: break-all; border-radius: 4px; }
pre.description { background: #f7f8fa; padding: .8em 1em; max-height: 40em; overflow: auto;
  white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid var(--line); border-radius: 4px;
  font: .85em/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
section.build { border: 1px solid var(--line); border-radius: 6px; padding: .2em 1em; margin: 1em 0; }
"""
