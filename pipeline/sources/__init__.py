"""Readers: one activity or pain file -> raw records. The only fitparse/gpxpy imports."""
