"""1 Hz sample series for one simulated activity, all numpy-vectorised.

One sample per *moving* second (the watch records nothing while its timer is
stopped). The pieces:

* a **route** near the athlete's home: a closed loop (``r(θ)`` with a couple
  of harmonics, laps repeated for long runs) or an out-and-back along a
  smoothed random heading; the **altitude** is a function of the position on
  the route (so a repeated lap climbs the same hill, an out-and-back climbs on
  the way out what it descends on the way back);
* **speed** by run type (easy, tempo with warm-up and cool-down, long with a
  late fade, treadmill belt steps, ride), with smoothed noise and a grade
  response (slower uphill, a little faster downhill); **distance** is the
  integral of speed, so the device distance and the speed always agree;
* **cadence** (steps/min) rising with speed, **heart rate** following effort
  with a ~30 s lag, an uphill term and cardiac drift, dipping after pauses;
* the **knee effect** (planted): from ~5 minutes before the sample where the
  distance first reaches the onset distance ``D``, cadence drops linearly by
  ``drop_spm`` and speed by ``fade`` (a fraction), both persisting to the end.

Everything is returned already quantised to what the files store (distance in
centimetres, speed in mm/s, altitude in 0.2 m, integer heart rate, cadence in
1/128 strides, positions in semicircles) so the truth is computed from the
very values a parser will read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RunSpec", "Samples", "generate", "SEMICIRCLES_PER_DEG", "KNEE_RAMP_S"]

SEMICIRCLES_PER_DEG = 2**31 / 180.0
#: Seconds over which the planted knee cadence drop and pace fade ramp in before the onset.
KNEE_RAMP_S = 300
_M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class RunSpec:
    """What to simulate: one activity's shape, in SI units."""

    sport: str  # running | cycling
    run_type: str  # easy | tempo | long | hills | ride
    distance_m: float  # target; the activity stops at the first sample past it
    v_easy_mps: float
    v_tempo_mps: float
    cadence_base_spm: float
    hr_rest_bpm: float
    hr_max_bpm: float
    home_lat: float
    home_lon: float
    base_alt_m: float
    hill_amp_m: float  # altitude amplitude of the route
    route_kind: str  # loop | out_and_back
    treadmill: bool = False
    pauses: tuple[tuple[float, int], ...] = ()  # (fraction of the run, seconds)
    knee_onset_m: float | None = None  # planted onset distance D
    knee_drop_spm: float = 0.0
    knee_fade: float = 0.0


@dataclass
class Samples:
    """Quantised 1 Hz series (length n) plus the planted markers."""

    elapsed_s: np.ndarray  # int, seconds since the first sample (pauses included)
    distance_cm: np.ndarray  # int
    speed_mmps: np.ndarray  # int
    altitude_m: np.ndarray  # float, multiples of 0.2
    lat_semi: np.ndarray | None  # int32 or None (treadmill)
    lon_semi: np.ndarray | None
    hr_bpm: np.ndarray  # int
    cadence_raw: np.ndarray  # int: strides/min (running) or rpm (cycling), integer part
    cadence_frac: np.ndarray  # int 0..127: 1/128 strides/min (running); zeros for cycling
    cycling: bool = False
    pauses: list[tuple[int, int]] = field(default_factory=list)  # (after sample k, seconds)
    knee_onset_index: int | None = None
    knee_ramp_start_index: int | None = None

    @property
    def n(self) -> int:
        return int(self.elapsed_s.size)

    @property
    def distance_m(self) -> np.ndarray:
        return self.distance_cm / 100.0

    @property
    def speed_mps(self) -> np.ndarray:
        return self.speed_mmps / 1000.0

    @property
    def cadence_spm(self) -> np.ndarray:
        """Steps/min for running (2 x strides), rpm for cycling."""
        value = self.cadence_raw + self.cadence_frac / 128.0
        return value if self.cycling else 2.0 * value

    @property
    def has_gps(self) -> bool:
        return self.lat_semi is not None

    def lat_deg(self) -> np.ndarray:
        """Latitudes in degrees (raises ``ValueError`` without GPS)."""
        if self.lat_semi is None:
            raise ValueError("this activity has no GPS positions")
        return self.lat_semi / SEMICIRCLES_PER_DEG

    def lon_deg(self) -> np.ndarray:
        """Longitudes in degrees (raises ``ValueError`` without GPS)."""
        if self.lon_semi is None:
            raise ValueError("this activity has no GPS positions")
        return self.lon_semi / SEMICIRCLES_PER_DEG

    def ascent_descent_m(self) -> tuple[float, float]:
        """Total ascent and descent of the altitude series, smoothed over ~15 s."""
        alt = self.altitude_m
        if alt.size < 2:
            return 0.0, 0.0
        w = min(15, alt.size)
        smooth = np.convolve(np.pad(alt, (w // 2, w - 1 - w // 2), mode="edge"), np.ones(w) / w, mode="valid")
        d = np.diff(smooth)
        return round(float(d[d > 0].sum()), 1), round(float(-d[d < 0].sum()), 1)


# --------------------------------------------------------------------------- helpers

def _smooth_noise(rng: np.random.Generator, n: int, sd: float, width_s: float) -> np.ndarray:
    """Gaussian-smoothed white noise with standard deviation ``sd``."""
    if n == 0:
        return np.zeros(0)
    half = int(3 * width_s)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / width_s) ** 2)
    k /= np.sqrt(np.sum(k**2))
    white = rng.standard_normal(n + 2 * half)
    return np.convolve(white, k, mode="valid")[:n] * sd


def _lag(x: np.ndarray, tau_s: float, y0: float) -> np.ndarray:
    """First-order lag (exponential moving average) of ``x`` starting at ``y0``."""
    a = np.exp(-1.0 / tau_s)
    m = min(x.size, int(12 * tau_s))
    kernel = (1 - a) * a ** np.arange(m)
    y = np.convolve(x - y0, kernel)[: x.size] + y0
    return y


def _integrate(speed: np.ndarray) -> np.ndarray:
    """Distance at each sample: trapezoid integral of speed, 0 at the first sample."""
    d = np.zeros(speed.size)
    if speed.size > 1:
        d[1:] = np.cumsum((speed[1:] + speed[:-1]) / 2.0)
    return d


class _Route:
    """Route geometry: position and altitude as functions of the run distance."""

    def __init__(self, rng: np.random.Generator, spec: RunSpec) -> None:
        self.kind = spec.route_kind
        total = spec.distance_m
        if self.kind == "loop":
            laps = max(1, int(np.ceil(total / 7000.0))) if spec.sport == "running" else 1
            self.length = total / laps
            theta = np.linspace(0.0, 2 * np.pi, 4001)
            a1, a2 = rng.uniform(0.05, 0.2, size=2)
            p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
            r = 1.0 + a1 * np.sin(2 * theta + p1) + a2 * np.sin(3 * theta + p2)
            x, y = r * np.cos(theta), r * np.sin(theta)
            seg = np.hypot(np.diff(x), np.diff(y))
            arc = np.concatenate([[0.0], np.cumsum(seg)])
            scale = self.length / arc[-1]
            self.grid = arc * scale
            rot = rng.uniform(0, 2 * np.pi)
            sign = rng.choice([-1.0, 1.0])
            xr = (x * np.cos(rot) - sign * y * np.sin(rot)) * scale
            yr = (x * np.sin(rot) + sign * y * np.cos(rot)) * scale
            self.x, self.y = xr - xr[0], yr - yr[0]
            m = rng.integers(1, 5, size=3)
        else:
            self.length = total / 2.0
            step = 5.0
            npts = int(self.length / step) + 2
            heading = rng.uniform(0, 2 * np.pi) + np.cumsum(_smooth_noise(rng, npts, 0.02, 20.0))
            self.x = np.concatenate([[0.0], np.cumsum(step * np.cos(heading[:-1]))])
            self.y = np.concatenate([[0.0], np.cumsum(step * np.sin(heading[:-1]))])
            self.grid = np.arange(npts) * step
            m = rng.uniform(1.0, 5.0, size=3)
        amps = spec.hill_amp_m * np.array([1.0, 0.45, 0.2]) * rng.uniform(0.7, 1.0, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        base_len = self.length if self.kind == "loop" else 4000.0
        wl = base_len / m
        u = self.grid
        alt = np.zeros_like(u)
        for amp, w, ph in zip(amps, wl, phases):
            alt += amp * (np.sin(2 * np.pi * u / w + ph) - np.sin(ph))
        self.alt = alt + spec.base_alt_m

    def coord(self, s: np.ndarray) -> np.ndarray:
        if self.kind == "loop":
            return np.mod(s, self.length)
        return np.clip(np.where(s <= self.length, s, 2 * self.length - s), 0.0, self.length)

    def altitude(self, s: np.ndarray) -> np.ndarray:
        return np.interp(self.coord(s), self.grid, self.alt)

    def xy(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = self.coord(s)
        return np.interp(u, self.grid, self.x), np.interp(u, self.grid, self.y)

    def grade(self, s: np.ndarray) -> np.ndarray:
        return (self.altitude(s + 5.0) - self.altitude(s - 5.0)) / 10.0


def _base_speed(rng: np.random.Generator, spec: RunSpec, n: int) -> np.ndarray:
    """Planned (flat-ground) speed by run type, with noise, before grade effects."""
    t = np.arange(n, dtype=np.float64)
    ve = spec.v_easy_mps
    if spec.sport == "cycling":
        v = np.full(n, ve) + _smooth_noise(rng, n, 0.6, 15.0)
        return np.clip(v, 2.5, 14.0)
    if spec.treadmill:
        steps = np.repeat(rng.uniform(-0.12, 0.12, size=n // 600 + 1), 600)[:n]
        return np.round(ve * 1.02 + steps, 2) + _smooth_noise(rng, n, 0.01, 5.0)
    if spec.run_type == "tempo":
        vt = spec.v_tempo_mps
        warm, cool = 720.0, 600.0
        tempo_s = max(300.0, (spec.distance_m - warm * ve * 0.98 - cool * ve * 0.95) / vt)
        frac = np.clip((t - warm) / 30.0, 0, 1) * np.clip((warm + tempo_s - t) / 30.0, 0, 1)
        easy = np.where(t < warm, ve * 0.98, ve * 0.95)
        v = easy + frac * (vt - easy)
        v = v + _smooth_noise(rng, n, 0.05 * ve, 20.0)
    elif spec.run_type == "long":
        expected = spec.distance_m / ve
        fade = 1.0 - 0.015 * np.clip((t - 0.7 * expected) / (0.3 * expected), 0, 1)
        v = ve * rng.uniform(0.96, 1.0) * fade + _smooth_noise(rng, n, 0.04 * ve, 25.0)
    else:  # easy, hills
        v = ve * rng.uniform(0.97, 1.03) + _smooth_noise(rng, n, 0.04 * ve, 25.0)
    v = v * np.clip(0.35 + t / 20.0, 0.0, 1.0)  # get going over the first ~13 s
    return np.clip(v, 0.8, 7.5)


def _grade_factor(g: np.ndarray, cycling: bool) -> np.ndarray:
    g = np.clip(g, -0.15, 0.15)
    if cycling:
        return np.where(g > 0, 1.0 / (1.0 + 9.0 * g), np.minimum(1.0 + 4.0 * -g, 1.35))
    return np.where(g > 0, 1.0 - 3.0 * g, np.minimum(1.0 + 1.5 * -g, 1.12))


def generate(rng: np.random.Generator, spec: RunSpec) -> Samples:
    """Simulate one activity's samples. See the module docstring for the model.

    Parameters
    ----------
    rng
        The activity's own random stream.
    spec
        What to simulate.

    Returns
    -------
    Samples
        Quantised 1 Hz series, pauses, and the planted knee onset (if any).
    """
    cycling = spec.sport == "cycling"
    n_max = int(spec.distance_m / (0.6 * spec.v_easy_mps)) + 600
    route = _Route(rng, spec)
    v_plan = _base_speed(rng, spec, n_max)
    v = v_plan
    g = np.zeros(n_max)
    if not spec.treadmill:
        for _ in range(2):
            s = _integrate(v)
            g = route.grade(s)
            v = v_plan * _grade_factor(g, cycling)
    s = _integrate(v)

    ramp = np.zeros(n_max)
    onset_idx: int | None = None
    ramp_start: int | None = None
    v_before = v  # speed without the knee fade: cadence follows it, the drop is planted on top
    if spec.knee_onset_m is not None and spec.knee_onset_m < spec.distance_m:
        end = int(np.searchsorted(s, spec.knee_onset_m))
        for _ in range(4):  # the fade slows the approach: re-place the ramp's end at the onset
            ramp = np.clip((np.arange(n_max) - (end - KNEE_RAMP_S)) / KNEE_RAMP_S, 0.0, 1.0)
            v = v_before * (1.0 - spec.knee_fade * ramp)
            s = _integrate(v)
            end = int(np.searchsorted(s, spec.knee_onset_m))
        ramp_start = end - KNEE_RAMP_S

    n = int(np.searchsorted(s, spec.distance_m)) + 1
    if n > n_max:
        raise RuntimeError("simulated activity never reached its distance")  # pragma: no cover
    v, s, g, ramp, v_plan, v_before = v[:n], s[:n], g[:n], ramp[:n], v_plan[:n], v_before[:n]
    t = np.arange(n, dtype=np.float64)

    # Quantise distance and speed to what FIT stores, then locate the onset on it.
    distance_cm = np.round(s * 100.0).astype(np.int64)
    speed_mmps = np.round(v * 1000.0).astype(np.int64)
    if spec.knee_onset_m is not None and ramp_start is not None:
        onset_idx = int(np.searchsorted(distance_cm, spec.knee_onset_m * 100.0))

    # Altitude (barometric: smooth, small noise), 0.2 m steps.
    if spec.treadmill:
        alt = spec.base_alt_m + 2.0 + _smooth_noise(rng, n, 0.4, 60.0)
    else:
        alt = route.altitude(s) + _smooth_noise(rng, n, 0.3, 10.0)
    altitude_m = np.round(alt * 5.0) / 5.0

    # Pauses: after sample k the timer stops for d seconds.
    pauses: list[tuple[int, int]] = []
    elapsed = t.copy()
    for frac, dur in spec.pauses:
        k = int(np.clip(round(frac * (n - 1)), 1, n - 2))
        pauses.append((k, int(dur)))
        elapsed[k + 1 :] += dur
    pauses.sort()

    # Heart rate: effort from flat-ground speed, uphill work, drift, lag, pause dips.
    hrr = spec.hr_max_bpm - spec.hr_rest_bpm
    if cycling:
        effort = 0.50 + 0.5 * (v_plan / spec.v_easy_mps - 1.0)
    else:
        effort = 0.60 + 1.1 * (v_plan / spec.v_easy_mps - 1.0)
    target = spec.hr_rest_bpm + hrr * np.clip(effort, 0.3, 0.97)
    target += 45.0 * np.clip(g, 0.0, 0.12)
    target += 0.11 * np.clip(t - 600.0, 0.0, None) / 60.0  # cardiac drift, ~+6.6 bpm/h
    hr = _lag(target, 30.0, spec.hr_rest_bpm + 15.0)
    for k, dur in pauses:
        dip = min(30.0, 0.35 * dur)
        after = t[k + 1 :] - t[k + 1]
        hr[k + 1 :] -= dip * np.exp(-after / 40.0)
    hr += _smooth_noise(rng, n, 1.2, 4.0)
    hr_bpm = np.clip(np.round(hr), 60, 210).astype(np.int64)

    # Cadence.
    if cycling:
        rpm = 86.0 + _smooth_noise(rng, n, 4.0, 10.0)
        coast = (g < -0.03) & (_smooth_noise(rng, n, 1.0, 20.0) > 0.0)
        rpm = np.where(coast, 0.0, rpm)
        rpm[0] = 0.0
        cadence_raw = np.clip(np.round(rpm), 0, 130).astype(np.int64)
        cadence_frac = np.zeros(n, dtype=np.int64)
    else:
        v_cad = np.clip(v_before, 0.8 * spec.v_easy_mps, None)
        spm = spec.cadence_base_spm + 12.0 * (v_cad - spec.v_easy_mps) + _smooth_noise(rng, n, 1.2, 8.0)
        spm -= spec.knee_drop_spm * ramp
        strides128 = np.round(np.clip(spm, 100.0, 220.0) / 2.0 * 128.0).astype(np.int64)
        cadence_raw, cadence_frac = np.divmod(strides128, 128)

    lat_semi = lon_semi = None
    if not spec.treadmill:
        x, y = route.xy(s)
        x = x + _smooth_noise(rng, n, 1.8, 15.0)
        y = y + _smooth_noise(rng, n, 1.8, 15.0)
        lat = spec.home_lat + y / _M_PER_DEG_LAT
        lon = spec.home_lon + x / (_M_PER_DEG_LAT * np.cos(np.radians(spec.home_lat)))
        lat_semi = np.round(lat * SEMICIRCLES_PER_DEG).astype(np.int64)
        lon_semi = np.round(lon * SEMICIRCLES_PER_DEG).astype(np.int64)

    return Samples(
        elapsed_s=elapsed.astype(np.int64),
        distance_cm=distance_cm,
        speed_mmps=speed_mmps,
        altitude_m=altitude_m,
        lat_semi=lat_semi,
        lon_semi=lon_semi,
        hr_bpm=hr_bpm,
        cadence_raw=cadence_raw.astype(np.int64),
        cadence_frac=cadence_frac.astype(np.int64),
        cycling=cycling,
        pauses=pauses,
        knee_onset_index=onset_idx,
        knee_ramp_start_index=ramp_start,
    )
