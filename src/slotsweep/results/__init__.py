"""Results: aggregation over seeds.

Run records and where they come from (results.json, multirun dirs, W&B), seed statistics,
tables, plots and published rows. Above evaluation/ (protocols) and runs/; below training/,
which re-scores the runs it finds here.
"""
