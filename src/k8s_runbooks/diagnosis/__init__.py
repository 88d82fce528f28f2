"""Prefect-free diagnosis: typed evidence in, ranked hypotheses out (`diagnose`), and the fix for each (`plan`)."""
