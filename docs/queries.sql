-- The coach's questions, as SQL on the published snapshot (docs/warehouse.md describes every
-- table and view). Run one by name, with its example parameters or your own:
--
--   pipeline sql --file docs/queries.sql --name onsets_with_cadence
--   pipeline sql --file docs/queries.sql --name onsets_with_cadence -p body_part hamstring -p weeks 12
--
-- or paste it into `duckdb -readonly data/warehouse/snapshot.duckdb` (replace each $name with a
-- value there). Each query starts with `-- name:`, then `-- question:` (what it answers), then
-- optional `-- params:` (example values, name=value) and comment lines, then the SQL up to `;`.
-- "The last N weeks" counts back from the athlete's latest run, not from today, so a query
-- gives the same answer on an old snapshot. tests/test_queries.py runs every query here.

-- name: onsets_with_cadence
-- question: In which runs of the last 8 weeks did knee pain begin, and how did the cadence in the
--   5 minutes before the onset compare with the first 10 minutes of the run?
-- params: body_part=knee weeks=8
-- A cadence drop before the onset (negative change) is the classic sign of a runner protecting a
-- sore leg. Pace in s/km (higher is slower).
SELECT
    p.athlete_id,
    p.run_start_local,
    p.side,
    p.severity,
    round(p.onset_distance_km, 2) AS onset_km,
    round(p.onset_elapsed_min, 1) AS onset_min,
    round(p.first10_cadence_spm, 1) AS first10_cadence_spm,
    round(p.pre5_cadence_spm, 1) AS pre5_cadence_spm,
    round(p.cadence_change_spm, 1) AS cadence_change_spm,
    round(p.first10_pace_s_per_km) AS first10_pace_s_per_km,
    round(p.pre5_pace_s_per_km) AS pre5_pace_s_per_km,
    p.activity_id
FROM pain_onsets p
JOIN (SELECT athlete_id, max(start_utc) AS latest_utc FROM runs GROUP BY athlete_id) latest USING (athlete_id)
WHERE p.body_part = $body_part
  AND p.run_start_utc >= latest.latest_utc - to_weeks(CAST($weeks AS INTEGER))
ORDER BY p.athlete_id, p.run_start_utc;

-- name: weekly_distance_vs_pain
-- question: Week by week, how far did each runner go, how much more than the week before, and
--   how many pain reports came in that week?
-- Weeks are ISO weeks (Monday to Sunday) on the runner's local calendar; a week without runs has
-- no row. pain_in_runs counts reports joined to that week's runs; pain_reported counts every
-- current report dated in the week, joined or not.
WITH reported AS (
    SELECT athlete_id, CAST(date_trunc('week', date_local) AS DATE) AS week_start_local, count(*) AS n
    FROM pain_reports_current
    WHERE date_local IS NOT NULL
    GROUP BY ALL
)
SELECT
    w.athlete_id,
    w.week_start_local,
    w.runs,
    round(w.distance_km, 1) AS distance_km,
    round(100 * (w.distance_km / prev.distance_km - 1)) AS change_vs_last_week_pct,
    round(w.longest_run_km, 1) AS longest_run_km,
    w.pain_reports AS pain_in_runs,
    coalesce(r.n, 0) AS pain_reported,
    w.max_pain_severity
FROM weekly_load w
LEFT JOIN weekly_load prev
    ON prev.athlete_id = w.athlete_id AND prev.week_start_local = w.week_start_local - 7
LEFT JOIN reported r
    ON r.athlete_id = w.athlete_id AND r.week_start_local = w.week_start_local
ORDER BY w.athlete_id, w.week_start_local;

-- name: long_run_spikes
-- question: Which runs were more than 30% longer than the runner's longest run of the 30 days
--   before, and did pain follow within two days?
-- The "10% rule" is gentler; 30% is a spike worth a conversation.
WITH r AS (
    SELECT
        athlete_id, activity_id, start_utc, date_local, distance_km,
        max(distance_km) OVER (
            PARTITION BY athlete_id ORDER BY start_utc
            RANGE BETWEEN INTERVAL 30 DAY PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING
        ) AS longest_30d_km
    FROM runs
)
SELECT
    r.athlete_id,
    r.date_local,
    round(r.distance_km, 1) AS distance_km,
    round(r.longest_30d_km, 1) AS longest_30d_km,
    round(r.distance_km / r.longest_30d_km, 2) AS ratio,
    (
        SELECT count(*) FROM pain_reports_current p
        WHERE p.athlete_id = r.athlete_id AND p.date_local BETWEEN r.date_local AND r.date_local + 2
    ) AS pain_reports_within_2_days,
    r.activity_id
FROM r
WHERE r.distance_km > 1.3 * r.longest_30d_km
ORDER BY r.athlete_id, r.start_utc;

-- name: pain_free_distance
-- question: How far did each run go before the pain started (the whole run when it did not hurt)?
-- params: athlete=knee
SELECT
    r.athlete_id,
    r.date_local,
    round(r.distance_km, 2) AS run_km,
    round(coalesce(min(p.onset_distance_km), r.distance_km), 2) AS pain_free_km,
    count(p.report_id) AS onsets,
    string_agg(DISTINCT p.body_part, ', ') AS body_parts,
    r.activity_id
FROM runs r
LEFT JOIN pain_onsets p USING (activity_id)
WHERE r.athlete_id = $athlete
GROUP BY r.athlete_id, r.date_local, r.start_utc, r.distance_km, r.activity_id
ORDER BY r.start_utc;

-- name: unmatched_pain_reports
-- question: Which pain reports could not be joined to the sample where the pain started, and why?
-- Status `after_run` and `next_day` are linked to a run but have no onset sample; `unmatched`
-- found no run at all (a run without the watch?). status_detail says what was tried.
SELECT athlete_id, date_local, onset_raw, body_part, side, severity, status, status_detail, source_file, line
FROM pain_reports_current
WHERE status <> 'matched'
ORDER BY athlete_id, date_local, source_file, line;

-- name: rejected_input
-- question: Which files and pain-log rows could not be loaded, and why?
-- Skipped files hold no activity (watch settings, a zip's own row); rejected ones are broken.
SELECT 'file' AS kind, path AS source, CAST(NULL AS INTEGER) AS line, status, reason,
       coalesce(athlete_id, split_part(path, '/', 1)) AS athlete_id
FROM files
WHERE status IN ('rejected', 'skipped')
UNION ALL
SELECT 'pain row', source_file, line, 'rejected', reason, split_part(source_file, '/', 1)
FROM pain_rows_rejected
ORDER BY kind, source, line;

-- name: onset_distance_by_body_part
-- question: For each runner and body part, how far into a run does the pain usually start, and how
--   far through the run is that?
SELECT
    athlete_id,
    body_part,
    side,
    count(*) AS onsets,
    round(min(onset_distance_km), 2) AS min_km,
    round(median(onset_distance_km), 2) AS median_km,
    round(max(onset_distance_km), 2) AS max_km,
    round(median(onset_elapsed_min), 1) AS median_min,
    round(median(onset_fraction_of_run), 2) AS median_fraction_of_run
FROM pain_onsets
GROUP BY athlete_id, body_part, side
ORDER BY athlete_id, onsets DESC, body_part;

-- name: hr_drift
-- question: In runs of 40 minutes or more, how much did the heart rate drift up from the first half
--   to the second half (by timer time), and did the pace change with it?
-- Drift at an even pace is cardiac drift (heat, dehydration, fatigue); drift with a fading pace
-- is worse. Pace in s/km.
WITH s AS (
    SELECT
        s.activity_id,
        s.hr_bpm,
        s.speed_mps,
        coalesce(s.moving_s, s.elapsed_s) >= a.moving_s / 2 AS second_half
    FROM samples s
    JOIN activities a USING (activity_id)
    WHERE a.sport IN ('running', 'trail_running', 'treadmill_running')
      AND a.moving_s >= 40 * 60
      AND s.hr_bpm > 0
)
SELECT
    r.athlete_id,
    r.date_local,
    round(r.moving_min) AS moving_min,
    round(avg(s.hr_bpm) FILTER (WHERE NOT s.second_half), 1) AS hr_first_half_bpm,
    round(avg(s.hr_bpm) FILTER (WHERE s.second_half), 1) AS hr_second_half_bpm,
    round(100 * (avg(s.hr_bpm) FILTER (WHERE s.second_half)
                 / avg(s.hr_bpm) FILTER (WHERE NOT s.second_half) - 1), 1) AS hr_drift_pct,
    round(1000 / avg(s.speed_mps) FILTER (WHERE NOT s.second_half AND s.speed_mps > 0)) AS pace_first_half_s_per_km,
    round(1000 / avg(s.speed_mps) FILTER (WHERE s.second_half AND s.speed_mps > 0)) AS pace_second_half_s_per_km,
    r.activity_id
FROM s
JOIN runs r USING (activity_id)
GROUP BY r.athlete_id, r.date_local, r.start_utc, r.moving_min, r.activity_id
ORDER BY hr_drift_pct DESC, r.start_utc;

-- name: runs_over_cap
-- question: Which runs went beyond the distance the runner is allowed (distance_cap in athlete.toml)?
SELECT
    r.athlete_id,
    r.date_local,
    round(r.distance_km, 2) AS distance_km,
    round(a.distance_cap_m / 1000, 2) AS cap_km,
    round(r.distance_km - a.distance_cap_m / 1000, 2) AS over_km,
    r.pain_reports,
    r.activity_id
FROM runs r
JOIN athletes a USING (athlete_id)
WHERE a.distance_cap_m IS NOT NULL AND r.distance_km * 1000 > a.distance_cap_m
ORDER BY r.athlete_id, r.start_utc;

-- name: fade_before_onset
-- question: Before their pain started, did runners slow down, shorten their stride rate or work
--   harder, compared with the start of the same run?
-- Averages over the matched onsets of each runner and body part; pace in s/km (positive change:
-- slower before the pain).
SELECT
    athlete_id,
    body_part,
    count(*) AS onsets,
    round(avg(pace_change_s_per_km), 1) AS pace_change_s_per_km,
    round(avg(cadence_change_spm), 1) AS cadence_change_spm,
    round(avg(hr_change_bpm), 1) AS hr_change_bpm,
    count(*) FILTER (WHERE cadence_change_spm < 0) AS onsets_with_cadence_drop
FROM pain_onsets
GROUP BY athlete_id, body_part
ORDER BY athlete_id, body_part;

-- name: acute_chronic_load
-- question: On the day of each run, how did the last 7 days' distance compare with the average
--   week of the last 28 days (acute:chronic ratio)?
-- Above about 1.5 the load rose fast. The first four weeks of a runner's history have too little
-- behind them (chronic_weeks < 4).
SELECT
    athlete_id,
    date_local,
    round(distance_km, 1) AS distance_km,
    round(sum(distance_km) OVER (PARTITION BY athlete_id ORDER BY start_utc
        RANGE BETWEEN INTERVAL 7 DAY PRECEDING AND CURRENT ROW), 1) AS acute_7d_km,
    round(sum(distance_km) OVER (PARTITION BY athlete_id ORDER BY start_utc
        RANGE BETWEEN INTERVAL 28 DAY PRECEDING AND CURRENT ROW) / 4, 1) AS chronic_weekly_km,
    round(
        sum(distance_km) OVER (PARTITION BY athlete_id ORDER BY start_utc
            RANGE BETWEEN INTERVAL 7 DAY PRECEDING AND CURRENT ROW)
        / nullif(sum(distance_km) OVER (PARTITION BY athlete_id ORDER BY start_utc
            RANGE BETWEEN INTERVAL 28 DAY PRECEDING AND CURRENT ROW) / 4, 0), 2) AS acute_chronic_ratio,
    round(date_diff('day', min(start_utc) OVER (PARTITION BY athlete_id), start_utc) / 7, 1) AS chronic_weeks,
    activity_id
FROM runs
ORDER BY athlete_id, start_utc;

-- name: recorded_twice
-- question: Which runs were recorded twice (two watches, a phone and a watch, a re-export), and do
--   the two recordings agree on the distance?
SELECT
    d.athlete_id,
    a.start_utc,
    a.source_file AS kept_file,
    d.source_file AS duplicate_file,
    round(a.distance_m / 1000, 2) AS kept_km,
    round(d.distance_m / 1000, 2) AS duplicate_km,
    round(d.distance_m - a.distance_m) AS difference_m,
    a.device_product AS kept_device,
    d.device_product AS duplicate_device
FROM activity_duplicates d
JOIN activities a ON a.activity_id = d.duplicate_of
ORDER BY d.athlete_id, a.start_utc;

-- name: recent_ingests
-- question: How did the last ingest runs go (for the person who looks after the nightly job)?
-- `interrupted` means the process died (power cut, kill); the next run finished its work.
SELECT
    started_utc,
    command,
    status,
    round(epoch(finished_utc) - epoch(started_utc), 1) AS seconds,
    summary::JSON ->> 'loaded' AS loaded,
    summary::JSON ->> 'rejected' AS rejected,
    summary::JSON ->> 'unchanged' AS unchanged,
    summary::JSON ->> 'missing_files' AS missing_files
FROM _ingest_runs
ORDER BY started_utc DESC
LIMIT 10;
