"""Each report page in headless Chromium with the network off: charts drawn, no console message, no request.

Chromium is Debian's ``chromium`` package (``/usr/bin/chromium``). When it is
missing and the tests run as root with ``apt-get``, the session fixture
installs it (``apt-get update``, ``apt-get install -y chromium``, with time
limits); otherwise the tests skip and say why.

One Chromium run per page (``--headless --dump-dom --screenshot``, a fresh
profile, virtual time so the charts finish drawing) gives the DOM after the
scripts ran, the console (``--enable-logging=stderr``: every ``console.*`` call
and uncaught error is a ``CONSOLE`` line) and a net log of every request the
network stack saw. The network is off three ways: DNS resolves nothing, every
connection goes to a dead proxy, and the page's own Content-Security-Policy
forbids requests. The screenshot (top of the page) is kept under
``test-artifacts/browser/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipeline.report import render_reports
from pipeline.warehouse.query import run_readonly_query

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
GENERATED = datetime(2026, 11, 16, 8, 0, tzinfo=timezone.utc)

#: Pages the 3-athlete simulated club produces (tests/conftest.py: sim_ingested).
PAGES = ["index.html", "knee/index.html", "spike/index.html", "control/index.html"]

NETWORK_OFF = [
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
]
QUIET = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--mute-audio",
    "--hide-scrollbars",
]


def _install_chromium() -> str | None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd, limit in ((["apt-get", "update"], 300), (["apt-get", "install", "-y", "chromium"], 900)):
        try:
            subprocess.run(cmd, check=True, timeout=limit, env=env, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"chromium is missing and `{' '.join(cmd)}` failed: {exc}")
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium, installed by apt-get when we may; else skip."""
    found = str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.is_file() else shutil.which("chromium")
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        found = _install_chromium()
        if found:
            return found
        pytest.skip("apt-get install chromium finished but no chromium executable was found")
    pytest.skip("Debian's chromium is not installed (/usr/bin/chromium) and we are not root with apt-get to install it")


class _Reader:
    def __init__(self, snapshot: Path) -> None:
        self.snapshot = snapshot

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        return run_readonly_query(self.snapshot, sql, params=params, timeout_s=120.0, max_rows=None)


@pytest.fixture(scope="module")
def pages(sim_ingested: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("browser-reports")
    paths = render_reports(_Reader(sim_ingested["settings"].snapshot_path), out, generated_utc=GENERATED)
    return {p.relative_to(out).as_posix(): p for p in paths}


class _Charts(HTMLParser):
    """For each ``<div id=...>`` named in ``ids``: how many svg/canvas and drawn marks (path) it holds."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__()
        self.ids = ids
        self.stack: list[str | None] = []
        self.found: dict[str, dict[str, int]] = {i: {"svg": 0, "canvas": 0, "path": 0} for i in ids}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        current = next((c for c in reversed(self.stack) if c is not None), None)
        if current is not None and tag in ("svg", "canvas", "path"):
            self.found[current][tag] += 1
        if tag in ("br", "img", "input", "meta", "link", "hr", "path", "rect", "line", "circle", "text"):
            return  # void (or usually self-closed) elements do not nest
        chart = dict(attrs).get("id")
        self.stack.append(chart if tag == "div" and chart in self.ids else None)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("path", "rect", "line", "circle", "text"):
            return
        if self.stack:
            self.stack.pop()


def _chart_ids(page_html: str) -> set[str]:
    m = re.search(r'<script type="application/json" id="chart-specs">(.*?)</script>', page_html, re.S)
    return set(json.loads(m.group(1))) if m else set()


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page (not the browser's own services) asked the network stack for."""
    if not netlog.is_file():
        return []
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log.get("events", []):
        params = event.get("params", {})
        if event.get("type") != start_job or "url" not in params:
            continue
        from_page = params.get("initiator") != "not an origin" or "file://" in params.get("network_isolation_key", "")
        if from_page and not params["url"].startswith(("file:", "data:", "blob:")):
            urls.append(params["url"])
    return urls


def _open(chromium: str, page: Path, work: Path, shot: Path) -> tuple[str, str, list[str]]:
    netlog = work / "netlog.json"
    cmd = [
        chromium, *QUIET, *NETWORK_OFF,
        f"--user-data-dir={work / 'profile'}",
        "--enable-logging=stderr", "--v=0",
        f"--log-net-log={netlog}",
        "--virtual-time-budget=20000",
        "--window-size=1200,1800",
        f"--screenshot={shot}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr, _page_requests(netlog)


def test_the_club_renders_the_expected_pages(pages: dict[str, Path]) -> None:
    assert sorted(pages) == sorted(PAGES)


@pytest.mark.parametrize("name", PAGES)
def test_page_draws_its_charts_offline_without_console_messages(
    name: str, chromium: str, pages: dict[str, Path], tmp_path: Path
) -> None:
    page = pages[name]
    ids = _chart_ids(page.read_text(encoding="utf-8"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / (name.replace("/", "_").removesuffix(".html") + ".png")
    shot.unlink(missing_ok=True)
    dom, stderr, requests = _open(chromium, page, tmp_path, shot)

    # every chart on the page was drawn, as SVG (or canvas) with marks in it
    if name in ("index.html", "knee/index.html", "spike/index.html"):
        assert ids, f"{name} should have charts"
    parser = _Charts(ids)
    parser.feed(dom)
    for chart_id, seen in parser.found.items():
        assert seen["svg"] + seen["canvas"] >= 1, f"{name}: {chart_id} was not drawn"
        assert seen["canvas"] or seen["path"] > 0, f"{name}: {chart_id} has an empty SVG"
    markup = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the embed code names the message itself
    assert "could not be drawn" not in markup
    # nothing on the console: no error, no warning, no log line
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    # and no request left for the network
    assert requests == [], requests
    assert shot.is_file() and shot.stat().st_size > 10_000
