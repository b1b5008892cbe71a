"""Device names: Garmin product ids newer than fitparse's profile are named as the FIT SDK names them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fitparse.profile import FIELD_TYPES

from pipeline.errors import InputError
from pipeline.sources import GZIP_MAGIC, gunzip_bounded
from pipeline.sources.fit import device_of, read_fit
from pipeline.sources.garmin_products import GARMIN_PRODUCTS, garmin_product_name

# Pairs read off Garmin's FIT SDK profiles in garmin/fit-python-sdk (21.100) and
# garmin/fit-javascript-sdk (21.161), one or more per product line the table must cover.
SDK_PAIRS = {
    2431: "fr235", 2691: "fr935", 3076: "fr245", 3113: "fr945", 3589: "fr745", 4024: "fr955",
    4257: "fr265_large", 4315: "fr965", 4432: "fr165",
    2697: "fenix5", 3290: "fenix6", 3291: "fenix6x", 3906: "fenix7", 4536: "fenix8",
    3943: "epix_gen2", 4313: "epix_gen2_pro_47",
    3638: "enduro", 4341: "enduro2", 4575: "enduro3",
    3466: "instinct_solar", 3888: "instinct_2", 4155: "instinct_crossover", 4585: "instinct3_solar_45mm",
    3226: "venu", 3703: "venu2", 4260: "venu3",
    2700: "vivoactive3", 3225: "vivoactive4_large", 4426: "vivoactive5", 2337: "vivo_active_hr",
    2530: "edge_820", 2713: "edge_1030", 3121: "edge_530", 3843: "edge_1040", 4061: "edge_540", 4440: "edge_1050",
    65534: "connect",
}


@pytest.mark.parametrize(("product_id", "name"), sorted(SDK_PAIRS.items()))
def test_table_names_product_lines_as_the_fit_sdk(product_id: int, name: str) -> None:
    assert garmin_product_name(product_id) == name
    assert garmin_product_name(str(product_id)) == name


def test_lookup_of_unknown_or_non_numeric_ids_is_none() -> None:
    assert garmin_product_name(9) is None  # bsm: a sensor, not in the table
    assert garmin_product_name(64999) is None
    for text in ("", "fr945", "31 13", "-3113", "３１１３"):  # the last one: full-width digits
        assert garmin_product_name(text) is None, text
    assert all(name and name == name.strip() for name in GARMIN_PRODUCTS.values())


@pytest.mark.parametrize(
    ("file_id", "creator", "expected"),
    [
        # fitparse leaves a product id it does not know as a number
        ({"type": "activity", "manufacturer": "garmin", "product": 4315}, {}, ("garmin", "fr965")),
        ({"type": "activity", "manufacturer": "garmin", "garmin_product": "3113"}, {}, ("garmin", "fr945")),
        ({"type": "activity", "manufacturer": "dynastream", "product": 3291}, {}, ("dynastream", "fenix6x")),
        # a name the file gives (file_id or creator) is kept as it is
        ({"type": "activity", "manufacturer": "garmin", "product": "fenix5"}, {}, ("garmin", "fenix5")),
        ({"type": "activity", "manufacturer": "garmin", "product": 4315},
         {"product_name": "Forerunner 965 LTE"}, ("garmin", "Forerunner 965 LTE")),
        # another maker's product numbers are not Garmin's
        ({"type": "activity", "manufacturer": "suunto", "product": 3113}, {}, ("suunto", "3113")),
        ({"type": "activity", "manufacturer": "wahoo_fitness", "product": 31}, {}, ("wahoo_fitness", "31")),
        # a Garmin id not in the table stays a number
        ({"type": "activity", "manufacturer": "garmin", "product": 1932}, {}, ("garmin", "1932")),
        # no manufacturer in file_id: the creator's counts
        ({"type": "activity", "product": 4024}, {"manufacturer": "garmin"}, ("garmin", "fr955")),
    ],
)
def test_device_of_names_numeric_garmin_products(file_id: dict, creator: dict, expected: tuple) -> None:
    assert device_of([file_id], [creator] if creator else []) == expected


# --------------------------------------------------------------------------- the real corpus


def _corpus_devices(corpus_dir: Path) -> list[tuple[str, str]]:
    """(file, product) for the manifest's FIT files; the manifest was written with another decoder."""
    rows = []
    with (corpus_dir / "MANIFEST.tsv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            value = row["manufacturer_product"]
            if not row["file"].startswith("fit/") or "/" not in value:
                continue
            if "(creator device_info: " in value:  # file_id has a bare number, device_info the name
                value = value.split("(creator device_info: ", 1)[1].rstrip(")")
            rows.append((row["file"], value.split("/", 1)[1].strip()))
    return rows


@pytest.mark.corpus
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "fitparse"])
def test_corpus_products_match_the_manifest(corpus_dir: Path, fast: bool) -> None:
    rows = _corpus_devices(corpus_dir)
    assert len(rows) >= 30, "the manifest lists FIT files with their device"
    # names fitparse's own (older) profile does not know: these come from our table
    newer_than_fitparse = {n for i, n in GARMIN_PRODUCTS.items() if i not in FIELD_TYPES["garmin_product"].values}
    checked, named_from_table, mismatches = 0, 0, []
    if not fast:  # fitparse is ~10x slower: only the files whose name comes from the table
        rows = [(name, expected) for name, expected in rows if expected in newer_than_fitparse]
    for name, expected in rows:
        data = (corpus_dir / name).read_bytes()
        try:
            if data.startswith(GZIP_MAGIC):
                data = gunzip_bounded(data, max_bytes=64 * 1024**2, path=name)
            sessions = read_fit(data, path=name, fast=fast)
        except InputError:
            continue  # rejected files (settings, monitoring, device-relative times) are tested elsewhere
        if not sessions:
            continue
        got = str(sessions[0].device_product)
        checked += 1
        named_from_table += got in newer_than_fitparse
        if got != expected:
            mismatches.append(f"{name}: {got!r}, manifest {expected!r}")
    assert checked >= (30 if fast else 8), checked
    assert named_from_table >= 8, named_from_table  # fr965, fr955, fr945, fenix6x, fr645m, venu3, ...
    assert not mismatches, "\n".join(mismatches)
