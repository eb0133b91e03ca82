"""Datasets as LightningDataModules yielding dict batches (see DESIGN.md "Data").

- `shapes`: synthetic videos of moving, occluding sprites with exact instance masks.
- `shards`: the reference's WebDataset shards (MOVi-C/E, YT-VIS, COCO) with its transforms.
- `video_files`: folders of mp4 clips (decord) with lossless masks beside them.
- `converters/`: from the official releases (YT-VIS, COCO, MOVi) to shards, and shards to mp4.
- `transforms`, `video_transforms`: normalisation, frames-to-tensor, crops and resizes.

Modules are imported by their `_target_` paths, not here, so that loading one dataset does not pull
in the dependencies of the others.
"""
