"""Evaluation: what a number means.

Metrics (FG-ARI, mBO, J&F), masks from the model's outputs, protocol stamps, trivial baselines,
mask pictures, and inference of a checkpoint on any video. Below training/ (the Lightning module
logs these metrics) and results/ (tables group by protocol); never imports them.
"""
