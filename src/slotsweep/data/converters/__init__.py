"""Converters from the official releases to the formats the readers in `slotsweep.data` read.

- `ytvis`, `coco`, `movi`: YT-VIS 2021 JSON, COCO JSON and MOVi TFDS to the reference's shards.
- `videos`: shards to a folder of mp4 clips with lossless masks (`dataset=video_folder`).
- `cli`: `python src/convert.py {ytvis,coco,movi,videos}` (docs/datasets.md).
"""
