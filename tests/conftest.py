"""Shared fixtures: the real-file corpus and a small simulated club built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """../shared/corpus, or skip: the real files are never copied into the project."""
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"real-file corpus not found at {CORPUS} (it lives beside the repo as ../shared/corpus)")
    return CORPUS


@pytest.fixture(scope="session")
def sim_club(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small seeded club written by the simulator: {'raw': Path, 'truth': dict}."""
    from pipeline.simulate import simulate

    raw = tmp_path_factory.mktemp("club") / "raw"
    summary = simulate(raw, athletes=3, weeks=4, seed=7)
    truth = json.loads(Path(summary.truth_path).read_text(encoding="utf-8"))
    return {"raw": raw, "truth": truth, "summary": summary}


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PIPELINE_* variables leak in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def sim_ingested(sim_club: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small club ingested once into a warehouse (read it through the snapshot)."""
    import shutil

    from pipeline.config import Settings
    from pipeline.ingest import ingest

    root = tmp_path_factory.mktemp("ingested")
    raw = root / "data" / "raw"
    shutil.copytree(sim_club["raw"], raw)
    settings = Settings(raw_dir=raw, warehouse_dir=root / "data" / "warehouse", reports_dir=root / "reports", workers=2)
    summary = ingest(settings)
    return {**sim_club, "raw": raw, "settings": settings, "summary": summary}
