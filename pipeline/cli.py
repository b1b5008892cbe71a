"""The ``pipeline`` command: simulate, ingest, report, nightly, sql.

The only module that imports click and configures logging. Errors a user
can fix are printed as one line (``error: ...``) with a documented exit code;
never a traceback.

Exit codes (documented in docs/operations.md):

===  =====================================================================
0    success
1    failure (a bug or an environment problem; the log says what)
2    usage error (bad option)
3    done, but some new input was rejected (files or pain-log rows)
4    the warehouse is locked by another ingest (retry later, or ``--wait``)
5    ``pipeline sql`` refused the query
===  =====================================================================
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import click

from pipeline.config import DEFAULT_SEED, Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REJECTIONS = 3
EXIT_LOCKED = 4
EXIT_REFUSED = 5
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT

log = logging.getLogger("pipeline")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _settings(raw: Path | None, warehouse: Path | None, reports: Path | None, **limits: Any) -> Settings:
    base = Settings()
    return Settings(
        raw_dir=raw or base.raw_dir,
        warehouse_dir=warehouse or base.warehouse_dir,
        reports_dir=reports or base.reports_dir,
        **{k: v for k, v in limits.items() if v is not None},
    )


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


raw_option = click.option(
    "--raw", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Raw data folder (default: data/raw in the repository, or $PIPELINE_RAW).",
)
warehouse_option = click.option(
    "--warehouse", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Warehouse folder (default: data/warehouse, or $PIPELINE_WAREHOUSE).",
)
reports_option = click.option(
    "--reports", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Reports folder (default: reports, or $PIPELINE_REPORTS).",
)
wait_option = click.option(
    "--wait", is_flag=True, help="Wait for another ingest to finish instead of exiting with code 4."
)
workers_option = click.option(
    "--workers", type=click.IntRange(0, 64), default=None,
    help="Decoder processes (default: up to 2; 0 decodes in this process).",
)


class _Group(click.Group):
    """Turns the package's own errors into one line and an exit code, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        from pipeline.errors import InputError, PipelineError, QueryRefused, WarehouseLocked

        try:
            return super().invoke(ctx)
        except WarehouseLocked as exc:
            _fail(str(exc), EXIT_LOCKED)
        except QueryRefused as exc:
            _fail(str(exc), EXIT_REFUSED)
        except InputError as exc:
            _fail(exc.message, EXIT_USAGE)
        except PipelineError as exc:
            _fail(str(exc), EXIT_FAILURE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pipeline")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """Join runners' watch files to where their pain starts.

    \b
    Typical use:
      pipeline simulate --out data/raw          # sample data with planted effects
      pipeline nightly                          # ingest + reports + publish
      pipeline sql "SELECT * FROM pain_reports" # the coach's ad-hoc SQL
    """
    _setup_logging(verbose, quiet)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write the athletes' raw files into.")
@click.option("--athletes", type=click.IntRange(3, 50), default=4, show_default=True,
              help="Number of athletes (the first three carry the planted effects).")
@click.option("--weeks", type=click.IntRange(1, 260), default=8, show_default=True,
              help="Weeks of training, ending on --end.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Random seed.")
@click.option("--end", "end_date", type=click.DateTime(["%Y-%m-%d"]), default="2026-11-15",
              show_default=True, help="Last day of the simulated period.")
def simulate(out: Path, athletes: int, weeks: int, seed: int, end_date: datetime) -> None:
    """Write seeded synthetic runners (FIT, GPX, pain logs) with planted effects.

    The same arguments give the same bytes. The planted truth is written to
    OUT/_truth/truth.json.

    \b
    Example:
      pipeline simulate --out /tmp/club --athletes 4 --weeks 8 --seed 42
    """
    from pipeline.simulate import simulate as run_simulation

    try:
        result = run_simulation(out, athletes=athletes, weeks=weeks, seed=seed, end_date=end_date.date())
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(
        f"simulated {result.n_athletes} athletes, {result.n_activity_files} activity files, "
        f"{result.n_pain_rows} pain-log rows -> {out} (truth: {result.truth_path})"
    )


def _progress_callback() -> Any:
    """A progress bar on a terminal; plain log lines under cron."""
    if sys.stderr.isatty():
        state: dict[str, Any] = {}

        def bar(done: int, total: int, path: str) -> None:
            if "bar" not in state:
                state["bar"] = click.progressbar(length=total, label="decoding", file=sys.stderr)
                state["bar"].__enter__()
            state["bar"].update(1)
            if done >= total:
                state["bar"].__exit__(None, None, None)

        return bar

    def lines(done: int, total: int, path: str) -> None:
        if done == total or done % 100 == 0:
            log.info("decoded %d/%d files", done, total)

    return lines


#: In the reports folder: what the nightly job last built the reports from.
REPORTS_MANIFEST = ".build.json"


def _render_if_changed(wh: Any, settings: Settings, *, force: bool, paths: list[Path]) -> bool:
    """Render the reports unless the warehouse says the same as at the last build; True if rendered.

    The last build is recorded in ``reports/.build.json``: the warehouse's
    content fingerprint (bookkeeping left out), the pipeline version and the
    pages written. Rendering is skipped only when both match and every page
    is still there, so a run killed before it rendered, a deleted page or a
    new pipeline version all lead to a rebuild.
    """
    from pipeline import __version__

    reports_dir = settings.reports_dir
    manifest = reports_dir / REPORTS_MANIFEST
    stamp = {"fingerprint": wh.content_fingerprint(), "pipeline": __version__}
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    pages = [reports_dir / rel for rel in previous.get("pages", [])] if isinstance(previous, dict) else []
    if (
        not force
        and pages
        and all(previous.get(key) == value for key, value in stamp.items())
        and all(page.is_file() for page in pages)
    ):
        log.info("reports: the warehouse did not change since they were built; %d pages kept", len(pages))
        paths.extend(pages)
        return False
    from pipeline.report import render_reports

    built = render_reports(wh, reports_dir, generated_utc=datetime.now(timezone.utc))
    paths.extend(built)
    record = {**stamp, "built_utc": datetime.now(timezone.utc).isoformat(),
              "pages": [page.relative_to(reports_dir).as_posix() for page in built]}
    tmp = manifest.with_name(f"{manifest.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.replace(manifest)
    return True


def _run_ingest(settings: Settings, *, wait: bool, command: str, with_reports: bool,
                force_reports: bool = False) -> tuple[Any, list[Path], bool]:
    if not settings.raw_dir.is_dir():
        _fail(f"raw folder {settings.raw_dir} does not exist (give --raw, or run `make run` for the sample club)",
              EXIT_USAGE)
    if not wait:
        from pipeline.warehouse import check_unlocked

        check_unlocked(settings.warehouse_path)  # before the heavy imports: a second ingest exits at once

    from pipeline.errors import WarehouseLocked
    from pipeline.ingest import ingest

    paths: list[Path] = []
    rendered: list[bool] = []

    def render(wh: Any, summary: Any) -> None:
        rendered.append(_render_if_changed(wh, settings, force=force_reports, paths=paths))

    try:
        summary = ingest(
            settings,
            wait=wait,
            command=command,
            progress=_progress_callback(),
            after_load=render if with_reports else None,
        )
    except WarehouseLocked as exc:
        _fail(str(exc), EXIT_LOCKED)
    return summary, paths, any(rendered)


def _print_summary(summary: Any, paths: list[Path], settings: Settings, *, rebuilt: bool = True) -> None:
    s = summary
    status = ", ".join(f"{k} {v}" for k, v in sorted(s.pain_status.items())) or "none"
    click.echo(
        f"files: {s.files_seen} seen, {s.loaded} loaded, {s.duplicates} duplicate, {s.skipped} skipped, "
        f"{len(s.rejected)} rejected, {s.unchanged} unchanged"
    )
    for path, reason in s.rejected:
        click.echo(f"  rejected {path}: {reason}")
    for path, reason in s.pain_rows_rejected:
        click.echo(f"  pain row rejected {path}: {reason}")
    for path in s.missing_files:
        click.echo(f"  missing {path}: gone from the raw folder (kept in the warehouse)")
    click.echo(f"activities: {s.activities_total} ({s.runs_total} runs), {s.samples_loaded} new samples")
    click.echo(f"pain reports: {s.pain_reports} ({status})")
    click.echo(f"warehouse: {settings.warehouse_path} (coach snapshot: {settings.snapshot_path})")
    if paths:
        index = [p for p in paths if p.name == "index.html"]
        kept = "" if rebuilt else " (unchanged: the warehouse did not change)"
        click.echo(f"reports: {len(paths)} pages{kept}, start at {index[0] if index else paths[0]}")
    click.echo(
        f"summary run={s.run_id} loaded={s.loaded} duplicate={s.duplicates} skipped={s.skipped} "
        f"rejected={len(s.rejected) + len(s.pain_rows_rejected)} runs={s.runs_total} "
        f"pain={s.pain_reports} matched={s.pain_matched} seconds={s.seconds:.1f}"
    )


@cli.command()
@raw_option
@warehouse_option
@wait_option
@workers_option
def ingest(raw: Path | None, warehouse: Path | None, wait: bool, workers: int | None) -> None:
    """Load new activity files and pain logs from the raw folder into the warehouse.

    Files already loaded (same SHA-256) are not read again; re-running changes
    nothing. Exit code 3 when some new input was rejected, 4 when another
    ingest holds the warehouse.

    \b
    Example:
      pipeline ingest --raw data/raw --warehouse data/warehouse
    """
    settings = _settings(raw, warehouse, None, workers=workers)
    summary, _, _ = _run_ingest(settings, wait=wait, command="ingest", with_reports=False)
    _print_summary(summary, [], settings)
    if summary.rejected or summary.pain_rows_rejected:
        sys.exit(EXIT_REJECTIONS)


@cli.command()
@warehouse_option
@reports_option
def report(warehouse: Path | None, reports: Path | None) -> None:
    """Render the HTML reports from the published warehouse snapshot.

    \b
    Example:
      pipeline report --warehouse data/warehouse --reports reports
    """
    from pipeline.report import render_reports

    settings = _settings(None, warehouse, reports)
    if not settings.snapshot_path.exists():
        _fail(f"no warehouse snapshot at {settings.snapshot_path}: run `pipeline ingest` first", EXIT_USAGE)
    reader = _SnapshotReader(settings.snapshot_path)
    paths = render_reports(reader, settings.reports_dir, generated_utc=datetime.now(timezone.utc))
    click.echo(f"reports: {len(paths)} pages in {settings.reports_dir}")
    for path in paths:
        click.echo(f"  {path}")


@cli.command()
@raw_option
@warehouse_option
@reports_option
@wait_option
@workers_option
@click.option("--all-reports", is_flag=True,
              help="Rebuild the reports even when the warehouse did not change.")
def nightly(raw: Path | None, warehouse: Path | None, reports: Path | None, wait: bool,
            workers: int | None, all_reports: bool) -> None:
    """Ingest new files, rebuild the reports if the warehouse changed, publish the coach's snapshot.

    Prints a short summary ending in one `summary ...` line for logs; a
    progress bar on a terminal, log lines (with -v) under cron. Exit codes:
    0 ok, 3 some new input rejected, 4 locked by another ingest, 1 failure.

    \b
    Example (crontab, 02:30 every night):
      30 2 * * *  cd /srv/pipeline && .venv/bin/pipeline -v nightly >> /var/log/pipeline.log 2>&1
    """
    settings = _settings(raw, warehouse, reports, workers=workers)
    summary, paths, rebuilt = _run_ingest(settings, wait=wait, command="nightly", with_reports=True,
                                          force_reports=all_reports)
    _print_summary(summary, paths, settings, rebuilt=rebuilt)
    if summary.rejected or summary.pain_rows_rejected:
        sys.exit(EXIT_REJECTIONS)


def _check_size(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value.strip(), re.I):
        raise click.BadParameter(f"{value!r} is not a size such as 512MB or 2GB")
    return value.strip()


@cli.command()
@click.argument("query", required=False)
@warehouse_option
@click.option("-p", "--param", "params", type=(str, str), multiple=True,
              help="Named parameter: -p name value (use $name in the query).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              help="Seconds before the query is interrupted (exit code 5).")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Threads DuckDB may use for the query.")
@click.option("--memory-limit", default="1GB", show_default=True, callback=_check_size,
              help="Memory DuckDB may use for the query (e.g. 512MB, 2GB).")
@click.option("-f", "--file", "query_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="A file of named queries (docs/queries.sql); with --name, run one of them.")
@click.option("-n", "--name", "query_name", default=None,
              help="The query to run from --file (without it, list the file's queries).")
def sql(query: str | None, warehouse: Path | None, params: tuple[tuple[str, str], ...], fmt: str,
        timeout: float, threads: int, memory_limit: str, query_file: Path | None, query_name: str | None) -> None:
    """Run a read-only SQL query on the published snapshot (QUERY or stdin).

    Only SELECT is allowed (also WITH, DESCRIBE, SHOW, EXPLAIN): writes,
    file access, ATTACH, SET, INSTALL/LOAD are refused, as is a query over
    the time or memory limit (exit code 5). A parameter's value is text;
    DuckDB casts it where the query compares it with a number or a date.

    \b
    Examples:
      pipeline sql "SELECT athlete_id, count(*) FROM activities GROUP BY 1"
      pipeline sql --format csv -p a knee "SELECT * FROM pain_reports WHERE athlete_id = \\$a"
      echo "SELECT * FROM weekly_load" | pipeline sql --format json
      pipeline sql --file docs/queries.sql --name runs_over_cap
    """
    from pipeline.errors import QueryRefused, WarehouseError
    from pipeline.warehouse.named import read_named_queries
    from pipeline.warehouse.query import run_readonly_query

    settings = _settings(None, warehouse, None)
    defaults: dict[str, str] = {}
    if query_name is not None and query_file is None:
        _fail("--name picks a query from --file; give --file too", EXIT_USAGE)
    if query_file is not None:
        if query is not None:
            _fail("give a QUERY or --file, not both", EXIT_USAGE)
        named = read_named_queries(query_file)
        if query_name is None:
            for entry in named.values():
                example = " ".join(f"-p {k} {v}" for k, v in entry.params.items())
                click.echo(f"{entry.name}{'  ' + example if example else ''}\n    {entry.question}")
            return
        if query_name not in named:
            _fail(f"{query_file} has no query named {query_name!r} (it has: {', '.join(named)})", EXIT_USAGE)
        query = named[query_name].sql
        defaults = named[query_name].params
    if query is None:
        if sys.stdin.isatty():
            _fail("give a query as an argument or on stdin", EXIT_USAGE)
        query = sys.stdin.read()
    if not query.strip():
        _fail("the query is empty", EXIT_USAGE)
    names = [name for name, _ in params]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        _fail(f"parameter(s) {', '.join('$' + r for r in repeated)} given more than once", EXIT_USAGE)
    if not settings.snapshot_path.exists():
        _fail(f"no warehouse snapshot at {settings.snapshot_path}: run `pipeline ingest` first", EXIT_USAGE)
    try:
        frame = run_readonly_query(settings.snapshot_path, query, params={**defaults, **dict(params)} or None,
                                   timeout_s=timeout, threads=threads, memory_limit=memory_limit)
    except QueryRefused as exc:
        _fail(str(exc), EXIT_REFUSED)
    except WarehouseError as exc:
        _fail(str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        _fail("query interrupted (Ctrl-C)", EXIT_INTERRUPTED)
    if fmt == "csv":
        import polars as pl

        nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
        flat = frame.with_columns(
            pl.col(name).map_elements(lambda v: json.dumps(_plain(v), default=_json_default),
                                      return_dtype=pl.String())
            for name in nested
        )
        click.echo(flat.write_csv(), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(frame.to_dicts(), default=_json_default, indent=None))
    else:
        import polars as pl

        with pl.Config(tbl_rows=200, tbl_cols=50, fmt_str_lengths=60, tbl_width_chars=200,
                       tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            click.echo(str(frame))
        click.echo(f"({frame.height} row{'s' if frame.height != 1 else ''})")


class _SnapshotReader:
    """Reports read the published snapshot through the same guarded path as the coach."""

    def __init__(self, snapshot: Path) -> None:
        self.snapshot = snapshot

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        from pipeline.warehouse.query import run_readonly_query

        return run_readonly_query(self.snapshot, sql, params=params, timeout_s=300.0, max_rows=None)


def _json_default(value: Any) -> Any:
    import decimal

    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def _plain(value: Any) -> Any:
    """A polars nested value (Series for a list) as plain Python for json.dumps."""
    if hasattr(value, "to_list"):
        return value.to_list()
    return value


def main() -> None:
    """Console-script entry point. A bug exits 1 with the traceback in the log, not on a user's screen."""
    try:
        cli.main(prog_name="pipeline")
    except Exception:
        log.exception("unexpected failure")
        sys.exit(EXIT_FAILURE)
