"""Datasets as LightningDataModules yielding dict batches (see DESIGN.md "Data").

- `shapes`: synthetic videos of moving, occluding sprites with exact instance masks.
- `transforms`: input normalisation and frames-to-tensor conversion shared by every dataset.

Modules are imported by their `_target_` paths, not here, so that loading one dataset does not pull
in the dependencies of the others.
"""
