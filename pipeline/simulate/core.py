"""Simulate one athlete: plan, samples, files, pain log and truth.

Random streams: athlete ``i`` of a run with ``seed`` uses
``SeedSequence(seed, spawn_key=(i, 0))`` for its profile and calendar and
``SeedSequence(seed, spawn_key=(i, 1, j))`` for its ``j``-th activity, so an
athlete's data depends only on ``seed``, its index and the period, never on
how many other athletes are simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from pipeline.simulate import painlog
from pipeline.simulate.fitact import DeviceInfo, build_fit
from pipeline.simulate.gpxenc import GPX_CADENCE_UNIT, gpx_bytes
from pipeline.simulate.painlog import MILE_M, OnsetPoint, PainRow, distance_form, iso_z, onset_point, time_form
from pipeline.simulate.plan import (
    KNEE_ONSET_CLIP_M,
    KNEE_ONSET_MEAN_M,
    KNEE_ONSET_SD_M,
    NON_SPIKE_MAX_RATIO,
    SPIKE_RATIO_RANGE,
    Athlete,
    Planned,
    make_athlete,
    plan_athlete,
)
from pipeline.simulate.signals import KNEE_RAMP_S, RunSpec, Samples, generate

__all__ = ["AthleteOutput", "simulate_athlete", "KNEE_PARAMS"]

#: Planted knee effect (athlete ``knee``).
KNEE_PARAMS: dict[str, Any] = {
    "onset_mean_km": KNEE_ONSET_MEAN_M / 1000.0,
    "onset_sd_km": KNEE_ONSET_SD_M / 1000.0,
    "onset_clip_km": [KNEE_ONSET_CLIP_M[0] / 1000.0, KNEE_ONSET_CLIP_M[1] / 1000.0],
    "min_remaining_m": 150.0,
    "cadence_drop_spm": [6.0, 8.0],
    "pace_fade": [0.04, 0.06],
    "ramp_s": KNEE_RAMP_S,
    "body_part": "knee",
    "side": "right",
}
_KNEE_FORMS = ["km", "mi_approx", "mi_range", "clock", "elapsed", "instant"]
_KNEE_NOTES = {
    "km": "knee started aching at {km} km on the watch, eased off the pace",
    "mi_approx": "started roughly around mile {mi} and slowly worsened",
    "mi_range": "outside of the knee, somewhere between mile {lo} and {hi}",
    "clock": "noticed it at {clock} by the watch clock, dull ache after that",
    "elapsed": "about {minutes} minutes in, sharp on the downhills",
    "instant": "logged it from the app the moment it started",
}
_KNEE_PARTS = ["knee", "Knee", "knee", "outer knee", "knee"]


@dataclass
class SimActivity:
    """A simulated activity and its files."""

    plan: Planned
    samples: Samples
    start_utc: datetime
    offset_s: int
    stem: str  # file name without extension
    ext: str  # fit | gpx
    knee: dict[str, Any] | None = None
    keep: np.ndarray | None = None  # GPX: which samples are written
    protect: list[int] = field(default_factory=list)  # GPX: samples that must be written (onsets)

    @property
    def rel(self) -> str:
        return f"{self.plan.athlete_id}/activities/{self.stem}.{self.ext}"

    @property
    def distance_m(self) -> float:
        return float(self.samples.distance_cm[-1]) / 100.0

    @property
    def end_utc(self) -> datetime:
        return self.start_utc + timedelta(seconds=int(self.samples.elapsed_s[-1]))

    def written_index(self, i: int) -> int:
        """Index of sample ``i`` among the samples written to the file."""
        if self.keep is None:
            return i
        return int(np.count_nonzero(self.keep[:i]))


@dataclass
class AthleteOutput:
    """Everything written for one athlete."""

    athlete: Athlete
    files: dict[str, bytes]  # path relative to out_dir -> bytes
    activities: list[dict[str, Any]]
    pain_reports: list[dict[str, Any]]
    athlete_truth: dict[str, Any]
    n_records: int


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _spec(a: Athlete, p: Planned, knee: dict[str, Any] | None) -> RunSpec:
    cycling = p.sport == "cycling"
    return RunSpec(
        sport=p.sport, run_type=p.run_type, distance_m=p.distance_m,
        v_easy_mps=7.4 if cycling else a.v_easy_mps, v_tempo_mps=a.v_tempo_mps,
        cadence_base_spm=a.cadence_base_spm, hr_rest_bpm=a.hr_rest_bpm, hr_max_bpm=a.hr_max_bpm,
        home_lat=a.home_lat, home_lon=a.home_lon, base_alt_m=a.base_alt_m, hill_amp_m=p.hill_amp_m,
        route_kind=p.route_kind, treadmill=p.treadmill, pauses=p.pauses,
        knee_onset_m=knee["drawn_onset_m"] if knee else None,
        knee_drop_spm=knee["cadence_drop_spm"] if knee else 0.0,
        knee_fade=knee["pace_fade"] if knee else 0.0,
    )


def _stem(p: Planned) -> str:
    kind = "treadmill" if p.treadmill else p.run_type
    return f"{p.start_local:%Y-%m-%d-%H%M}-{kind}"


def _haversine_m(lat: np.ndarray, lon: np.ndarray) -> float:
    la, lo = np.radians(lat), np.radians(lon)
    a = np.sin(np.diff(la) / 2) ** 2 + np.cos(la[:-1]) * np.cos(la[1:]) * np.sin(np.diff(lo) / 2) ** 2
    return float(np.sum(2 * 6_371_008.8 * np.arcsin(np.sqrt(a))))


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def simulate_athlete(index: int, seed: int, start: date, weeks: int) -> AthleteOutput:
    """Simulate athlete ``index`` over ``weeks`` weeks from ``start`` (see the package docs)."""
    prng = _rng(seed, index, 0)
    athlete = make_athlete(index, prng)
    tz = ZoneInfo(athlete.timezone)
    plans = plan_athlete(athlete, prng, start, weeks)

    sims: list[SimActivity] = []
    for j, p in enumerate(plans):
        arng = _rng(seed, index, 1, j)
        knee = None
        margin = KNEE_PARAMS["min_remaining_m"]
        if p.knee_onset_m is not None and p.sport == "running" and p.distance_m > p.knee_onset_m + margin:
            knee = {
                "drawn_onset_m": _r(p.knee_onset_m, 2),
                "cadence_drop_spm": _r(arng.uniform(*KNEE_PARAMS["cadence_drop_spm"]), 2),
                "pace_fade": _r(arng.uniform(*KNEE_PARAMS["pace_fade"]), 4),
            }
        samples = generate(arng, _spec(athlete, p, knee))
        if knee is not None:
            knee["sample_index"] = samples.knee_onset_index
            knee["ramp_start_index"] = samples.knee_ramp_start_index
        start_utc = p.start_local.astimezone(timezone.utc)
        offset = int(p.start_local.utcoffset().total_seconds())  # type: ignore[union-attr]
        sims.append(SimActivity(p, samples, start_utc, offset, _stem(p), athlete.fmt, knee))

    rows: list[PainRow] = []
    src = f"{athlete.athlete_id}/pain.csv"
    if athlete.variant == "knee":
        rows += _knee_rows(athlete, sims, prng, tz, src, start, weeks)
    elif athlete.variant == "spike":
        rows += _spike_rows(athlete, sims, tz, src)
    elif athlete.variant == "phone":
        rows += _phone_rows(athlete, sims, prng, src)

    files: dict[str, bytes] = {}
    activities: list[dict[str, Any]] = []
    n_records = 0
    for j, sim in enumerate(sims):
        frng = _rng(seed, index, 2, j)
        entries = _write_activity(athlete, sim, frng, files)
        activities.extend(entries)
        n_records += sum(e["n_records"] for e in entries if e["broken"] is None)
    _load_ratios(activities)

    for row in rows:  # GPX files skip a few samples: index the onset among the written points
        sim = row.activity
        if sim is not None and sim.keep is not None and row.truth["sample_index"] is not None:
            row.truth["sample_index"] = sim.written_index(row.truth["sample_index"])
    csv_bytes, ordered = painlog.write_csv(rows)
    files[src] = csv_bytes
    files[f"{athlete.athlete_id}/athlete.toml"] = _toml(athlete)
    athlete_truth = _athlete_truth(athlete, sims, len(ordered))
    return AthleteOutput(athlete, files, activities, [r.truth for r in ordered], athlete_truth, n_records)


# --------------------------------------------------------------------------- files

def _toml(a: Athlete) -> bytes:
    lines = [
        "# written by pipeline.simulate",
        f'name = "{a.name}"',
        f'timezone = "{a.timezone}"',
        f'unit = "{a.unit}"',
    ]
    if a.distance_cap:
        lines.append(f'distance_cap = "{a.distance_cap}"')
    return ("\n".join(lines) + "\n").encode("utf-8")


def _write_activity(
    a: Athlete, sim: SimActivity, rng: np.random.Generator, files: dict[str, bytes]
) -> list[dict[str, Any]]:
    s, p = sim.samples, sim.plan
    unix = int(sim.start_utc.timestamp()) + s.elapsed_s
    base = _activity_truth(a, sim)
    out = [base]
    if sim.ext == "gpx":
        keep = np.ones(s.n, dtype=bool)
        drop = rng.uniform(size=s.n) < 0.02
        drop[[0, -1]] = False
        drop[sim.protect] = False
        keep &= ~drop
        sim.keep = keep
        files[sim.rel] = gpx_bytes(
            "phone", name=f"{'Morning' if sim.plan.start_local.hour < 12 else 'Evening'} Run", activity_type="running",
            unix_s=unix[keep], lat_deg=np.round(s.lat_deg()[keep], 7), lon_deg=np.round(s.lon_deg()[keep], 7),
            ele_m=s.altitude_m[keep], hr_bpm=s.hr_bpm[keep], cad_strides=np.round(s.cadence_spm[keep] / 2.0),
        )
        lat, lon = s.lat_deg()[keep], s.lon_deg()[keep]
        base.update(n_records=int(keep.sum()), gps_distance_m=_r(_haversine_m(lat, lon), 2),
                    gpx_cadence_unit=GPX_CADENCE_UNIT, device={"creator": "StravaGPX Android"})
        return out

    fa = build_fit(
        s, start_utc=sim.start_utc, utc_offset_s=sim.offset_s, sport=p.sport, sub_sport=p.sub_sport,
        device=DeviceInfo(a.product or 0, a.serial, current=a.watch != "classic",
                          chest_strap=a.watch.endswith("strap")),
        lap_m=MILE_M if a.unit == "mi" else 1000.0,
        footpod_serial=(a.serial + 7) if p.treadmill else None,
    )
    data = fa.data
    base["n_laps"] = fa.n_laps
    if p.broken == "truncated":
        k = int(s.n * 0.6)
        cut = int(fa.record_offsets[k]) + fa.record_size // 2
        data = data[:cut]
        base["broken_offset"] = cut
    elif p.broken == "corrupt":
        k = s.n // 2
        off = int(fa.record_offsets[k]) + 5
        buf = bytearray(data)
        for b in range(off, off + 8):
            buf[b] ^= 0xFF
        data = bytes(buf)
        base["broken_offset"] = off
    files[sim.rel] = data
    if s.has_gps:
        base["gps_distance_m"] = _r(_haversine_m(s.lat_deg(), s.lon_deg()), 2)
    if p.also_gpx:
        rel = f"{p.athlete_id}/activities/{sim.stem}.gpx"
        files[rel] = gpx_bytes(
            "garmin_connect", name=f"{a.city} Running", activity_type="running", unix_s=unix,
            lat_deg=s.lat_deg(), lon_deg=s.lon_deg(), ele_m=np.round(s.altitude_m, 1),
            hr_bpm=s.hr_bpm, cad_strides=s.cadence_raw,
        )
        dup = dict(base)
        dup.update(file=rel, format="gpx", duplicate_of=sim.rel, n_laps=None,
                   gpx_cadence_unit=GPX_CADENCE_UNIT, device={"creator": "Garmin Connect"})
        out.append(dup)
    return out


def _activity_truth(a: Athlete, sim: SimActivity) -> dict[str, Any]:
    s, p = sim.samples, sim.plan
    cad = s.cadence_spm
    moving = cad > 0
    ascent, descent = s.ascent_descent_m()
    pauses = []
    for k, dur in s.pauses:
        t_stop = sim.start_utc + timedelta(seconds=int(s.elapsed_s[k]))
        pauses.append({"after_sample": k, "start_utc": iso_z(t_stop),
                       "end_utc": iso_z(t_stop + timedelta(seconds=dur)), "duration_s": dur})
    return {
        "file": sim.rel,
        "format": sim.ext,
        "athlete_id": a.athlete_id,
        "sport": p.sport,
        "sub_sport": p.sub_sport,
        "run_type": p.run_type,
        "start_utc": iso_z(sim.start_utc),
        "end_utc": iso_z(sim.end_utc),
        "start_local": p.start_local.isoformat(),
        "utc_offset_s": sim.offset_s,
        "timezone": a.timezone,
        "elapsed_s": float(s.elapsed_s[-1]),
        "moving_s": float(s.n - 1),
        "distance_m": _r(sim.distance_m, 2),
        "n_records": s.n,
        "has_gps": s.has_gps,
        "route_kind": None if p.treadmill else p.route_kind,
        "hilly": p.hill_amp_m >= 10.0,
        "hill_amp_m": _r(p.hill_amp_m, 1),
        "total_ascent_m": ascent,
        "total_descent_m": descent,
        "avg_hr_bpm": _r(s.hr_bpm.mean(), 2),
        "max_hr_bpm": int(s.hr_bpm.max()),
        "avg_cadence_spm": _r(cad[moving].mean() if moving.any() else 0.0, 2),
        "cadence_unit": "rpm" if p.sport == "cycling" else "steps_per_min",
        "n_pauses": len(pauses),
        "pauses": pauses,
        "is_spike": p.is_spike,
        "longest_30d_m": None,
        "ratio_to_30d_longest": None,
        "duplicate_of": None,
        "broken": p.broken,
        "broken_offset": None,
        "knee_onset": sim.knee,
        "device": {"manufacturer": "garmin", "product": a.product, "product_name": a.product_name,
                   "serial_number": a.serial} if sim.ext == "fit" else None,
        "notes": list(p.notes),
    }


def _load_ratios(activities: list[dict[str, Any]]) -> None:
    """Fill ``longest_30d_m`` / ``ratio_to_30d_longest`` for runs (primary, readable files only)."""
    runs = [e for e in activities if e["sport"] == "running" and e["duplicate_of"] is None and e["broken"] is None]
    starts = [datetime.fromisoformat(e["start_utc"].replace("Z", "+00:00")) for e in runs]
    for i, e in enumerate(runs):
        prior = [runs[j]["distance_m"] for j in range(i) if timedelta(0) < starts[i] - starts[j] <= timedelta(days=30)]
        if prior:
            e["longest_30d_m"] = max(prior)
            e["ratio_to_30d_longest"] = _r(e["distance_m"] / max(prior), 4)


def _athlete_truth(a: Athlete, sims: list[SimActivity], n_rows: int) -> dict[str, Any]:
    effects = {"knee": "knee_distance_onset", "spike": "load_spike", "control": "none", "phone": "shin_minutes"}
    effect = effects[a.variant]
    params: dict[str, Any] = {}
    if a.variant == "knee":
        params = dict(KNEE_PARAMS)
        params["n_onsets"] = sum(1 for s in sims if s.knee is not None)
    elif a.variant == "spike":
        params = {"spike_ratio_range": list(SPIKE_RATIO_RANGE), "non_spike_max_ratio": NON_SPIKE_MAX_RATIO,
                  "window_days": 30, "base_long_km": [14.0, 16.0],
                  "n_spikes": sum(1 for s in sims if s.plan.is_spike),
                  "reports": "spike k%3==0: hamstring by distance; 1: lower back 'after' + calf 'next day'; "
                             "2: hamstring by clock"}
    elif a.variant == "phone":
        params = {"body_part": "shin", "side": "left", "onset": "whole minute at ~70% of a tempo run"}
    return {
        "name": a.name, "variant": a.variant, "timezone": a.timezone, "unit": a.unit,
        "distance_cap": a.distance_cap, "city": a.city, "home_lat": a.home_lat, "home_lon": a.home_lon,
        "format": a.fmt, "product": a.product, "product_name": a.product_name, "watch": a.watch,
        "easy_pace_s_per_km": _r(1000.0 / a.v_easy_mps, 1), "cadence_base_spm": a.cadence_base_spm,
        "hr_rest_bpm": a.hr_rest_bpm, "hr_max_bpm": a.hr_max_bpm,
        "effect": effect, "params": params, "n_activities": len(sims), "n_pain_rows": n_rows,
        "pain_csv": f"{a.athlete_id}/pain.csv",
    }


# --------------------------------------------------------------------------- pain rows

def _report(sim: SimActivity | None, row: PainRow, athlete: Athlete, src: str, status: str, effect: str,
            onset: OnsetPoint | None, implied: dict[str, Any]) -> PainRow:
    if onset is not None and onset.sample_index is not None and sim is not None and sim.ext == "gpx":
        sim.protect.append(onset.sample_index)
    row.activity = sim
    row.truth = painlog.truth_entry(
        athlete_id=athlete.athlete_id, source_file=src, row=row, expected_status=status, effect=effect,
        activity_file=sim.rel if sim else None,
        activity_date_local=sim.plan.start_local.date() if sim else None,
        onset=onset, implied=implied,
    )
    return row


def _is_dst_change_day(day: date, tz: ZoneInfo) -> bool:
    before = datetime(day.year, day.month, day.day, 0, tzinfo=tz).utcoffset()
    after = (datetime(day.year, day.month, day.day, 0, tzinfo=tz) + timedelta(days=1)).utcoffset()
    return before != after


def _knee_rows(a: Athlete, sims: list[SimActivity], rng: np.random.Generator, tz: ZoneInfo, src: str,
               start: date, weeks: int) -> list[PainRow]:
    rows: list[PainRow] = []
    onset_sims = [s for s in sims if s.knee is not None and s.samples.knee_onset_index is not None]
    queue: list[str] = []
    while len(queue) < len(onset_sims) + len(_KNEE_FORMS):
        queue += [_KNEE_FORMS[i] for i in rng.permutation(len(_KNEE_FORMS))]
    for n, sim in enumerate(onset_sims):
        s = sim.samples
        local_day = sim.plan.start_local.date()
        if _is_dst_change_day(local_day, tz):
            wanted = ["clock"]  # the day the clocks change: a wall-clock onset
        else:
            wanted = _KNEE_FORMS
        form = next((f for f in queue if f in wanted), wanted[0])
        if form in queue:
            queue.remove(form)
        i = int(s.knee_onset_index)  # type: ignore[arg-type]
        onset = onset_point(sim.start_utc, s.elapsed_s, s.distance_cm, i)
        if form in ("km", "mi_approx", "mi_range"):
            text, implied = distance_form(form, float(onset.distance_m))  # type: ignore[arg-type]
        else:
            text, implied = time_form(form, onset, sim.start_utc, tz)
        miles = float(onset.distance_m) / MILE_M  # type: ignore[arg-type]
        notes = _KNEE_NOTES[form].format(
            km=text.split()[0], mi=round(miles), lo=int(miles), hi=int(miles) + 1,
            clock=onset.utc.astimezone(tz).strftime("%H:%M"), minutes=int(onset.moving_s // 60))
        run = "" if form == "instant" or rng.uniform() < 0.25 else f"{sim.plan.start_local:%H:%M}"
        row = PainRow(sim.plan.start_local, "" if form == "instant" else local_day.isoformat(), run, text,
                      _KNEE_PARTS[n % len(_KNEE_PARTS)], "knee", "right", int(rng.integers(3, 7)), notes)
        rows.append(_report(sim, row, a, src, "matched", "knee_onset", onset, implied))
    # one report on a day without any run: it matches nothing
    run_days = {s.plan.start_local.date() for s in sims}
    free = [start + timedelta(days=d) for d in range(1, 7 * weeks) if start + timedelta(days=d) not in run_days]
    fridays = [d for d in free if d.weekday() == 4]
    if free:
        day = (fridays or free)[0]
        text, implied = distance_form("mi_approx", 5 * MILE_M)
        del implied["precision_m"]  # nothing was planted
        row = PainRow(datetime(day.year, day.month, day.day, 12, tzinfo=tz), day.isoformat(), "", text, "knee",
                      "knee", "right", 3, "ran without the watch today, knee went around 5 miles")
        rows.append(_report(None, row, a, src, "unmatched", "unmatched_no_run", None, implied))
    return rows


def _spike_rows(a: Athlete, sims: list[SimActivity], tz: ZoneInfo, src: str) -> list[PainRow]:
    rows: list[PainRow] = []
    spikes = [s for s in sims if s.plan.is_spike]
    for k, sim in enumerate(spikes):
        s = sim.samples
        day = sim.plan.start_local.date()
        run = f"{sim.plan.start_local:%H:%M}"
        kind = k % 3
        if kind == 0:
            miles = int(0.88 * float(s.distance_cm[-1]) / 100.0 / MILE_M)
            i = int(np.searchsorted(s.distance_cm, miles * MILE_M * 100.0))
            onset = onset_point(sim.start_utc, s.elapsed_s, s.distance_cm, i)
            text, implied = distance_form("mi_exact", miles * MILE_M)
            row = PainRow(sim.plan.start_local, day.isoformat(), run, text, "hamstring", "hamstring", "left", 5,
                          f"left hamstring tightened up from mile {miles}, jogged it home")
            rows.append(_report(sim, row, a, src, "matched", "spike_hamstring", onset, implied))
        elif kind == 1:
            # no sample: the pipeline counts these from the run's end, with the run's totals
            end = OnsetPoint(None, sim.end_utc, float(s.elapsed_s[-1]), float(s.n - 1), sim.distance_m)
            totals = {"lo_m": sim.distance_m, "hi_m": sim.distance_m}
            row = PainRow(sim.plan.start_local, day.isoformat(), run, "after", "lower back", "lower_back", "", 4,
                          "lower back stiff after finishing, sat in the car too long?")
            after = {"kind": "after", "form": "after", **totals}
            rows.append(_report(sim, row, a, src, "after_run", "spike_lower_back", end, after))
            next_day = day + timedelta(days=1)  # the row's date is the day the pain was noticed
            row = PainRow(sim.plan.start_local + timedelta(days=1), next_day.isoformat(), run, "next day", "calf",
                          "calf", "both", 4, "both calves sore the morning after the long run, stairs hurt")
            nd = {"kind": "next_day", "form": "next_day", **totals}
            rows.append(_report(sim, row, a, src, "next_day", "spike_calf", end, nd))
        else:
            target = int(0.85 * s.n)
            unix = int(sim.start_utc.timestamp()) + s.elapsed_s
            cands = np.flatnonzero((unix % 60 == 0) & (np.arange(s.n) >= target))
            i = int(cands[0]) if cands.size else target
            onset = onset_point(sim.start_utc, s.elapsed_s, s.distance_cm, i)
            text, implied = time_form("clock_hm", onset, sim.start_utc, tz)
            row = PainRow(sim.plan.start_local, day.isoformat(), run, text, "hamstring", "hamstring", "left", 5,
                          f"hamstring grabbed at {text}, walked a bit")
            rows.append(_report(sim, row, a, src, "matched", "spike_hamstring", onset, implied))
    return rows


def _phone_rows(a: Athlete, sims: list[SimActivity], rng: np.random.Generator, src: str) -> list[PainRow]:
    rows: list[PainRow] = []
    tempo = [s for s in sims if s.plan.run_type in ("tempo", "hills") and not s.samples.pauses and s.samples.n > 1800]
    for sim in tempo[:2]:
        s = sim.samples
        minute = int(0.7 * s.n / 60)
        i = minute * 60
        onset = onset_point(sim.start_utc, s.elapsed_s, s.distance_cm, i)
        text, implied = time_form("minutes", onset, sim.start_utc, ZoneInfo(a.timezone))
        row = PainRow(sim.plan.start_local, sim.plan.start_local.date().isoformat(), f"{sim.stem}.gpx", text,
                      "shin", "shin", "left", int(rng.integers(2, 4)), f"left shin niggle about {minute} minutes in")
        rows.append(_report(sim, row, a, src, "matched", "shin_minutes", onset, implied))
    return rows
