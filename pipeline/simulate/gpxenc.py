"""GPX 1.1 track files, as a phone app or Garmin Connect's export writes them.

Two styles:

* ``phone`` — like the Strava Android app's export (creator ``StravaGPX Android``):
  ``<trk><name>``, ``<type>running</type>``, one ``<trkseg>`` (a pause is a
  gap in the times), ``<trkpt lat lon>`` with 7 decimals, ``<ele>`` with one,
  ``<time>`` as ``...Z``;
* ``garmin_connect`` — Garmin Connect's "Export to GPX" of a FIT file
  (creator ``Garmin Connect``): full-precision coordinates from the FIT
  semicircles, ``<time>`` with ``.000Z``.

Both carry heart rate and cadence in the Garmin TrackPointExtension v1
namespace (``gpxtpx:hr``, ``gpxtpx:cad``). ``gpxtpx:cad`` is written the way
Garmin's export writes running cadence: **strides per minute** (half the steps),
rounded to an integer.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np

__all__ = ["gpx_bytes", "TPX_NS", "GPX_CADENCE_UNIT"]

TPX_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v1"
#: What ``gpxtpx:cad`` holds in the files written here.
GPX_CADENCE_UNIT = "strides_per_min"

_HEAD = {
    "phone": (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx creator="StravaGPX Android" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
        '     xsi:schemaLocation="http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd'
        ' http://www.garmin.com/xmlschemas/TrackPointExtension/v1'
        ' http://www.garmin.com/xmlschemas/TrackPointExtensionv1.xsd"\n'
        '     version="1.1" xmlns="http://www.topografix.com/GPX/1/1"\n'
        f'     xmlns:gpxtpx="{TPX_NS}">\n'
        " <metadata>\n  <time>{time}</time>\n </metadata>\n"
        " <trk>\n  <name>{name}</name>\n  <type>{type}</type>\n"
    ),
    "garmin_connect": (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx creator="Garmin Connect" version="1.1"\n'
        '  xsi:schemaLocation="http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/11.xsd"\n'
        f'  xmlns:gpxtpx="{TPX_NS}"\n'
        '  xmlns="http://www.topografix.com/GPX/1/1"\n'
        '  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xmlns:gpxx="http://www.garmin.com/xmlschemas/GpxExtensions/v3">\n'
        "  <metadata>\n    <link href=\"connect.garmin.com\">\n      <text>Garmin Connect</text>\n"
        "    </link>\n    <time>{time}</time>\n  </metadata>\n"
        "  <trk>\n    <name>{name}</name>\n    <type>{type}</type>\n"
    ),
}
_POINT = {
    "phone": (
        '   <trkpt lat="{lat:.7f}" lon="{lon:.7f}">\n    <ele>{ele:.1f}</ele>\n    <time>{time}Z</time>\n'
        "    <extensions>\n     <gpxtpx:TrackPointExtension>\n      <gpxtpx:hr>{hr}</gpxtpx:hr>\n"
        "      <gpxtpx:cad>{cad}</gpxtpx:cad>\n     </gpxtpx:TrackPointExtension>\n    </extensions>\n"
        "   </trkpt>\n"
    ),
    "garmin_connect": (
        '      <trkpt lat="{lat!r}" lon="{lon!r}">\n        <ele>{ele!r}</ele>\n'
        "        <time>{time}.000Z</time>\n        <extensions>\n          <gpxtpx:TrackPointExtension>\n"
        "            <gpxtpx:hr>{hr}</gpxtpx:hr>\n            <gpxtpx:cad>{cad}</gpxtpx:cad>\n"
        "          </gpxtpx:TrackPointExtension>\n        </extensions>\n      </trkpt>\n"
    ),
}


def iso_seconds(unix_s: np.ndarray) -> list[str]:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC, no zone suffix) for integer Unix seconds, vectorised."""
    return np.datetime_as_string(np.asarray(unix_s, dtype="datetime64[s]"), unit="s").tolist()


def gpx_bytes(
    style: str,
    *,
    name: str,
    activity_type: str,
    unix_s: np.ndarray,
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    ele_m: np.ndarray,
    hr_bpm: np.ndarray,
    cad_strides: np.ndarray,
) -> bytes:
    """A GPX 1.1 document with one track of one segment; times are UTC ``Z``.

    Parameters
    ----------
    style
        ``"phone"`` or ``"garmin_connect"`` (see the module docstring).
    name, activity_type
        ``<trk><name>`` and ``<trk><type>``.
    unix_s, lat_deg, lon_deg, ele_m, hr_bpm, cad_strides
        One value per track point; ``cad_strides`` in strides per minute.

    Returns
    -------
    bytes
        The UTF-8 document.
    """
    times = iso_seconds(unix_s)
    suffix = ".000Z" if style == "garmin_connect" else "Z"
    head = _HEAD[style].format(time=times[0] + suffix, name=escape(name), type=escape(activity_type))
    seg_indent = "    " if style == "garmin_connect" else "  "
    tmpl = _POINT[style]
    lat_l, lon_l = lat_deg.tolist(), lon_deg.tolist()
    ele_l = ele_m.tolist()
    hr_l, cad_l = hr_bpm.astype(int).tolist(), cad_strides.astype(int).tolist()
    points = [
        tmpl.format(lat=la, lon=lo, ele=el, time=tm, hr=h, cad=c)
        for la, lo, el, tm, h, c in zip(lat_l, lon_l, ele_l, times, hr_l, cad_l)
    ]
    tail_indent = "  " if style == "garmin_connect" else " "
    body = f"{seg_indent}<trkseg>\n" + "".join(points) + f"{seg_indent}</trkseg>\n{tail_indent}</trk>\n</gpx>\n"
    return (head + body).encode("utf-8")
