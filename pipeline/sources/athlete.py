"""One athlete's settings: ``data/raw/<athlete_id>/athlete.toml``.

::

    name = "Ann Example"          # default: the athlete id
    timezone = "Europe/London"    # IANA zone; default: unknown (None)
    unit = "mi"                   # "km" (default) or "mi": how reports show distances
    distance_cap = "9 mi"         # optional, a distance with a unit

The file is optional: without it the athlete gets the defaults. A file that
exists but cannot be used (not UTF-8, not TOML, a wrong value) is rejected
with :class:`~pipeline.errors.RejectedFile` naming it, rather than guessed at.
See ``docs/pain-log.md``.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import PainRowError, RejectedFile
from pipeline.sources.pain import parse_distance_m

__all__ = ["Athlete", "read_athlete", "ATHLETE_FILE", "ATHLETE_ID_RE", "valid_timezone"]

logger = logging.getLogger(__name__)

#: The settings file inside an athlete's folder.
ATHLETE_FILE = "athlete.toml"

#: What an athlete id (a folder name under ``data/raw``) may look like.
ATHLETE_ID_RE = re.compile(r"[a-z0-9_-]+")

_KNOWN_KEYS = frozenset({"name", "timezone", "unit", "distance_cap"})


@dataclass(frozen=True)
class Athlete:
    """An athlete as the pipeline knows them.

    Attributes
    ----------
    athlete_id : str
        The folder name under ``data/raw`` (``[a-z0-9_-]+``).
    name : str
        Display name; the id when ``athlete.toml`` gives none.
    timezone : str or None
        IANA zone the athlete's clock times (pain log ``onset`` ``14:32``) are read in.
    unit : {"km", "mi"}
        The unit reports show distances in.
    distance_cap_m : float or None
        ``distance_cap`` in metres.
    """

    athlete_id: str
    name: str
    timezone: str | None = None
    unit: Literal["km", "mi"] = "km"
    distance_cap_m: float | None = None


def valid_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA zone name zoneinfo can load."""
    if not name or name != name.strip():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def read_athlete(folder: Path, *, athlete_id: str) -> Athlete:
    """Read ``folder/athlete.toml`` into an :class:`Athlete`.

    Parameters
    ----------
    folder : Path
        The athlete's folder (``data/raw/<athlete_id>``).
    athlete_id : str
        The athlete id (the folder name).

    Returns
    -------
    Athlete
        With defaults (name = id, no zone, unit km, no cap) when the file is absent.

    Raises
    ------
    RejectedFile
        The id is not ``[a-z0-9_-]+``, or the file is not UTF-8 TOML, or a
        value is wrong (unknown zone, unit other than km/mi, cap without a
        unit). The error names ``<folder name>/athlete.toml``.
    """
    folder = Path(folder)
    rel = f"{folder.name}/{ATHLETE_FILE}"
    if not ATHLETE_ID_RE.fullmatch(athlete_id):
        raise RejectedFile(
            f"athlete id {athlete_id!r} is not valid: use lower-case letters, digits, '_' or '-'",
            path=folder.name,
        )
    path = folder / ATHLETE_FILE
    if not path.is_file():
        logger.debug("%s: no %s, using defaults", folder.name, ATHLETE_FILE)
        return Athlete(athlete_id=athlete_id, name=athlete_id)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RejectedFile(f"cannot read: {exc.strerror or exc}", path=rel) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RejectedFile("not UTF-8 text", path=rel, offset=exc.start) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RejectedFile(f"not valid TOML: {exc}", path=rel) from exc
    return _athlete_from(data, athlete_id=athlete_id, rel=rel)


def _athlete_from(data: dict[str, Any], *, athlete_id: str, rel: str) -> Athlete:
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        logger.warning("%s: ignoring unknown key(s): %s", rel, ", ".join(unknown))

    name = data.get("name", athlete_id)
    if not isinstance(name, str):
        raise RejectedFile(f"name must be a string (got {name!r})", path=rel)
    name = name.strip() or athlete_id

    zone = data.get("timezone")
    if zone is not None:
        if not isinstance(zone, str) or not valid_timezone(zone.strip()):
            raise RejectedFile(
                f"timezone {zone!r} is not an IANA time zone name (e.g. \"Europe/London\")",
                path=rel,
            )
        zone = zone.strip()

    unit = data.get("unit", "km")
    if not isinstance(unit, str) or unit.strip().lower() not in ("km", "mi"):
        raise RejectedFile(f'unit must be "km" or "mi" (got {unit!r})', path=rel)
    unit_norm: Literal["km", "mi"] = "mi" if unit.strip().lower() == "mi" else "km"

    cap = data.get("distance_cap")
    cap_m: float | None = None
    if cap is not None:
        if not isinstance(cap, str):
            raise RejectedFile(
                f'distance_cap must be a distance with a unit, e.g. "9 mi" (got {cap!r})',
                path=rel,
            )
        try:
            cap_m = parse_distance_m(cap)
        except PainRowError as exc:
            raise RejectedFile(f"distance_cap: {exc.reason}", path=rel) from exc

    return Athlete(
        athlete_id=athlete_id, name=name, timezone=zone, unit=unit_norm, distance_cap_m=cap_m
    )
