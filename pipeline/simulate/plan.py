"""The simulated cohort and each athlete's training calendar.

Athletes by index (``simulate(athletes=N)``, N >= 3):

0. ``knee``    London (Europe/London, unit "mi", ``distance_cap = "9 mi"``), FIT, Forerunner 945.
1. ``spike``   New York (America/New_York, "mi"), FIT, Forerunner 935.
2. ``control`` Berlin (Europe/Berlin, "km"), FIT, fenix 5.
3+. cycling through ``phone`` (GPX from a phone app) and ``control`` variants in
   further cities (Madrid, Paris, Sydney, Chicago), ids ``phone``, ``control2``,
   ``phone2``, ``control3``, ...

Every athlete's calendar starts with an opening long run on the first day of
the period (so the first weekend long run is not a load spike against an
empty history), then follows a weekly template. Outside the planted spikes,
no run is longer than 1.25x the longest run of the previous 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

__all__ = [
    "Athlete",
    "Planned",
    "make_athlete",
    "plan_athlete",
    "SPIKE_RATIO_RANGE",
    "NON_SPIKE_MAX_RATIO",
    "KNEE_ONSET_MEAN_M",
    "KNEE_ONSET_SD_M",
    "KNEE_ONSET_CLIP_M",
]

#: Planted spikes are this many times the previous 30 days' longest run.
SPIKE_RATIO_RANGE = (1.36, 1.5)
#: Any other run is at most this many times the previous 30 days' longest run.
NON_SPIKE_MAX_RATIO = 1.25
#: Knee onset distance D ~ Normal(mean, sd), clipped (metres), drawn for every run of athlete ``knee``.
KNEE_ONSET_MEAN_M = 9600.0
KNEE_ONSET_SD_M = 350.0
KNEE_ONSET_CLIP_M = (8700.0, 10500.0)


@dataclass(frozen=True)
class Athlete:
    """One simulated runner: who, where, which device, how they run."""

    index: int
    athlete_id: str
    name: str
    variant: str  # knee | spike | control | phone
    timezone: str
    unit: str  # km | mi
    distance_cap: str | None
    city: str
    home_lat: float
    home_lon: float
    base_alt_m: float
    fmt: str  # fit | gpx
    product: int | None  # Garmin product id (FIT athletes)
    product_name: str
    serial: int
    v_easy_mps: float
    v_tempo_mps: float
    cadence_base_spm: float
    hr_rest_bpm: float
    hr_max_bpm: float
    watch: str = "classic"  # classic (2015-2019) | current (2022 on) | current+strap (with an HRM-Pro)


@dataclass
class Planned:
    """One planned activity (a run or ride) before it is simulated."""

    athlete_id: str
    day: int  # days since the period start
    start_local: datetime  # aware, athlete's zone
    run_type: str  # easy | tempo | long | hills | ride
    sport: str = "running"
    sub_sport: str = "generic"
    distance_m: float = 0.0
    hill_amp_m: float = 4.0
    route_kind: str = "loop"
    treadmill: bool = False
    pauses: tuple[tuple[float, int], ...] = ()
    also_gpx: bool = False  # the same run also exported as Garmin Connect GPX
    broken: str | None = None  # truncated | corrupt
    is_spike: bool = False
    knee_onset_m: float | None = None  # drawn onset distance D (knee athlete)
    notes: list[str] = field(default_factory=list)


_CITIES = {
    "London": ("Europe/London", 51.5155, -0.1410, 25.0),
    "New York": ("America/New_York", 40.7812, -73.9665, 30.0),
    "Berlin": ("Europe/Berlin", 52.5145, 13.3501, 38.0),
    "Madrid": ("Europe/Madrid", 40.4153, -3.6845, 660.0),
    "Paris": ("Europe/Paris", 48.8462, 2.3372, 45.0),
    "Sydney": ("Australia/Sydney", -33.8915, 151.2767, 20.0),
    "Chicago": ("America/Chicago", 41.8826, -87.6226, 180.0),
}
_EXTRA_CITIES = ["Madrid", "Paris", "Sydney", "Chicago"]
# (format, Garmin product id, product name, watch kind) of the fourth and later control athletes
_CONTROL_WATCHES = [("fit", 2431, "fr235", "classic"), ("fit", 4024, "fr955", "current+strap"),
                    ("fit", 4315, "fr965", "current")]
_EXTRA_NAMES = ["Sofia Ruiz", "Camille Durand", "Mia Thompson", "Noah Kowalski", "Aiko Tanaka", "Jonas Berg"]


def make_athlete(index: int, rng: np.random.Generator) -> Athlete:
    """The athlete at ``index`` (0 knee, 1 spike, 2 control, 3+ phone/control variants)."""
    watch = "classic"
    if index == 0:
        variant, aid, name, city, unit, cap, fmt, product, pname = (
            "knee", "knee", "Harriet Okafor", "London", "mi", "9 mi", "fit", 3113, "fr945")
    elif index == 1:
        variant, aid, name, city, unit, cap, fmt, product, pname = (
            "spike", "spike", "Marcus Bell", "New York", "mi", None, "fit", 2691, "fr935")
    elif index == 2:
        variant, aid, name, city, unit, cap, fmt, product, pname = (
            "control", "control", "Lena Vogt", "Berlin", "km", None, "fit", 2697, "fenix5")
    else:
        k = index - 3
        variant = "phone" if k % 2 == 0 else "control"
        n_same = k // 2 + 1
        aid = variant if (variant == "phone" and n_same == 1) else f"{variant}{n_same + (variant == 'control')}"
        city = _EXTRA_CITIES[k % len(_EXTRA_CITIES)]
        name = _EXTRA_NAMES[k % len(_EXTRA_NAMES)]
        unit, cap = ("mi", None) if city == "Chicago" else ("km", None)
        if variant == "phone":
            fmt, product, pname = "gpx", None, "StravaGPX Android"
        else:  # a club's watches span the years: a Forerunner 235, 955 with a chest strap, 965
            fmt, product, pname, watch = _CONTROL_WATCHES[(k // 2) % len(_CONTROL_WATCHES)]
    tz, lat, lon, alt = _CITIES[city]
    home_lat = lat + float(rng.uniform(-0.004, 0.004))
    home_lon = lon + float(rng.uniform(-0.006, 0.006))
    pace_s_per_km = float(rng.uniform(320, 360))  # easy pace 5:20-6:00 /km
    v_easy = 1000.0 / pace_s_per_km
    return Athlete(
        index=index, athlete_id=aid, name=name, variant=variant, timezone=tz, unit=unit,
        distance_cap=cap, city=city, home_lat=round(home_lat, 6), home_lon=round(home_lon, 6),
        base_alt_m=alt, fmt=fmt, product=product, product_name=pname,
        serial=int(rng.integers(3_000_000_000, 3_999_999_999)),
        v_easy_mps=round(v_easy, 4), v_tempo_mps=round(v_easy * float(rng.uniform(1.17, 1.22)), 4),
        cadence_base_spm=round(float(rng.uniform(162, 170)), 1),
        hr_rest_bpm=float(rng.integers(46, 56)), hr_max_bpm=float(rng.integers(182, 194)), watch=watch,
    )


# weekday -> (run_type, probability, (lo_km, hi_km), (earliest, latest) local start)
_AM = (time(6, 15), time(7, 30))
_PM = (time(17, 45), time(19, 0))
_WEEKEND = (time(8, 0), time(9, 30))
_TEMPLATES: dict[str, dict[int, tuple[str, float, tuple[float, float], tuple[time, time]]]] = {
    "knee": {
        1: ("easy", 1.0, (5.0, 8.0), _AM),
        2: ("tempo", 1.0, (6.0, 8.5), _PM),
        3: ("easy", 0.6, (5.0, 7.5), _AM),  # odd weeks: a medium-long run instead
        5: ("easy", 0.7, (5.0, 7.0), _WEEKEND),
        6: ("long", 1.0, (11.0, 18.0), _WEEKEND),
    },
    "spike": {
        1: ("easy", 1.0, (6.0, 9.0), _AM),
        3: ("tempo", 1.0, (6.0, 9.0), _PM),
        4: ("easy", 0.5, (5.0, 7.0), _AM),
        6: ("long", 1.0, (14.0, 16.0), _WEEKEND),
    },
    "control": {
        1: ("easy", 1.0, (6.0, 9.0), _AM),
        2: ("tempo", 1.0, (6.0, 9.0), _PM),
        4: ("easy", 0.8, (5.0, 8.0), _AM),
        6: ("long", 1.0, (12.0, 17.0), _WEEKEND),
    },
    "phone": {
        0: ("easy", 0.8, (5.0, 7.0), _PM),
        2: ("tempo", 1.0, (7.0, 9.0), _PM),
        3: ("easy", 0.5, (5.0, 7.0), _AM),
        5: ("long", 1.0, (10.0, 15.0), _WEEKEND),
    },
}


def _start_time(rng: np.random.Generator, window: tuple[time, time], day: date, tz: ZoneInfo) -> datetime:
    lo = window[0].hour * 3600 + window[0].minute * 60
    hi = window[1].hour * 3600 + window[1].minute * 60
    sec = int(rng.integers(lo, hi))
    return datetime.combine(day, time(sec // 3600, sec // 60 % 60, sec % 60), tzinfo=tz)


def plan_athlete(athlete: Athlete, rng: np.random.Generator, start: date, weeks: int) -> list[Planned]:
    """The athlete's activities over ``weeks`` weeks from ``start``, in time order.

    Planted variety by athlete (only where the period allows it):
    knee: two pauses on its first easy run, the second easy run on a treadmill, a
    medium-long Thursday run in odd weeks, hills in some tempo slots, onset distance
    D ~ N(9.6 km, 0.35 km) drawn for every run; spike: one ride (first Saturday),
    spikes on the first Sunday from day 12 and then each Sunday >= 31 days after
    the previous spike; control: its first three short runs become the truncated
    FIT, the corrupt FIT and the FIT+GPX duplicate; phone: GPX files, pauses as
    time gaps. Varieties tied to a run need the period to hold that run.
    """
    tz = ZoneInfo(athlete.timezone)
    variant = athlete.variant
    template = _TEMPLATES[variant]
    plans: list[Planned] = []
    n_days = 7 * weeks
    opening_km = {"knee": 12.0, "spike": 14.5, "control": 13.0, "phone": 11.0}[variant]
    plans.append(Planned(athlete.athlete_id, 0, _start_time(rng, _WEEKEND, start, tz), "long",
                         distance_m=opening_km * 1000.0 * float(rng.uniform(0.97, 1.03))))
    for day in range(1, n_days):
        d = start + timedelta(days=day)
        week = day // 7
        slot = template.get(d.weekday())
        if variant == "knee" and d.weekday() == 3 and week % 2 == 1:
            slot = ("long", 1.0, (10.8, 12.0), _AM)
        if slot is None:
            continue
        run_type, prob, (lo_km, hi_km), window = slot
        draw = float(rng.uniform())
        forced = week == 0 and (  # make sure the first week holds the planted variety
            (athlete.index == 0 and d.weekday() == 3) or (athlete.index == 2 and d.weekday() in (1, 2, 4))
        )
        if draw > prob and not forced:
            continue
        km = float(rng.uniform(lo_km, hi_km))
        p = Planned(athlete.athlete_id, day, _start_time(rng, window, d, tz), run_type, distance_m=km * 1000.0)
        if run_type == "tempo" and float(rng.uniform()) < 0.4:
            p.run_type, p.hill_amp_m, p.distance_m = "hills", float(rng.uniform(22, 35)), min(km, 8.5) * 1000.0
        plans.append(p)
    # one bike ride, on the first Saturday after the opening run
    sat = next((day for day in range(1, n_days) if (start + timedelta(days=day)).weekday() == 5), None)
    if athlete.index == 1 and sat is not None:
        d = start + timedelta(days=sat)
        plans.append(Planned(athlete.athlete_id, sat, _start_time(rng, (time(9, 0), time(10, 0)), d, tz), "ride",
                             sport="cycling", sub_sport="road", distance_m=float(rng.uniform(35, 45)) * 1000.0,
                             hill_amp_m=15.0, route_kind="out_and_back"))
    plans.sort(key=lambda p: p.start_local)

    # Per-activity details drawn in a fixed order.
    for p in plans:
        p.route_kind = p.route_kind if p.sport == "cycling" else ("out_and_back" if rng.uniform() < 0.35 else "loop")
        if p.run_type != "hills" and p.sport == "running":
            p.hill_amp_m = float(rng.uniform(2.0, 6.0)) if rng.uniform() < 0.8 else float(rng.uniform(12.0, 25.0))
        if p.run_type == "long" and p.sport == "running":
            p.sub_sport = "road" if variant != "phone" else "generic"
        pause_draw = float(rng.uniform())
        if p.sport == "running" and pause_draw < 0.15:
            n_p = 1 + int(rng.uniform() < 0.3)
            p.pauses = tuple((float(rng.uniform(0.2, 0.8)), int(rng.integers(20, 180))) for _ in range(n_p))
        if variant == "knee":
            p.knee_onset_m = float(np.clip(rng.normal(KNEE_ONSET_MEAN_M, KNEE_ONSET_SD_M), *KNEE_ONSET_CLIP_M))

    # Cohort variety, on the first suitable runs after the opening long run (index 0-2 only).
    later = [p for p in plans if p.day >= 1 and p.sport == "running"]
    easy = [p for p in later if p.run_type == "easy"]
    if athlete.index == 0:
        if easy:
            easy[0].pauses = ((0.35, 47), (0.7, 95))
            easy[0].notes.append("two pauses (traffic lights, a shoelace)")
        if len(easy) > 1:
            p = easy[1]
            p.treadmill, p.sub_sport, p.route_kind, p.pauses = True, "treadmill", "loop", ()
            p.notes.append("treadmill: no GPS, distance from the footpod")
    elif athlete.index == 1 and easy:
        easy[0].pauses = ((0.5, 130),)
    elif athlete.index == 2:
        short = [p for p in later if p.run_type != "long"]
        for p, kind in zip(short, ("truncated", "corrupt", "duplicate")):
            p.pauses = ()
            if kind == "duplicate":
                p.also_gpx = True
                p.notes.append("exported twice: FIT from the watch and GPX from Garmin Connect")
            else:
                p.broken = kind
    _shape_load(athlete, plans, rng)
    return plans


def _longest_before(plans: list[Planned], i: int, days: int = 30) -> float:
    """Longest running distance in the ``days`` days before plan ``i`` (0 if none)."""
    t = plans[i].start_local
    best = 0.0
    for q in plans[:i]:
        if q.sport == "running" and q.broken is None and t - q.start_local <= timedelta(days=days):
            best = max(best, q.distance_m)
    return best


def _shape_load(athlete: Athlete, plans: list[Planned], rng: np.random.Generator) -> None:
    """Plant the spikes (spike athlete) and keep every other run <= 1.25x the 30-day longest."""
    last_spike_day: int | None = None
    for i, p in enumerate(plans):
        if p.sport != "running":
            continue
        longest = _longest_before(plans, i)
        if (
            athlete.variant == "spike"
            and p.run_type == "long"
            and p.start_local.weekday() == 6
            and p.day >= 12
            and (last_spike_day is None or p.day - last_spike_day >= 31)
            and longest > 0
        ):
            p.is_spike = True
            p.distance_m = longest * float(rng.uniform(*SPIKE_RATIO_RANGE))
            p.sub_sport = "road"
            p.pauses = ()
            p.notes.append("load spike")
            last_spike_day = p.day
        elif longest > 0 and p.distance_m > NON_SPIKE_MAX_RATIO * longest:
            p.distance_m = NON_SPIKE_MAX_RATIO * longest * float(rng.uniform(0.97, 1.0))
