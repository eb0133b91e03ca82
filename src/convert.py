"""Convert datasets to the reference's shards or to video files: python src/convert.py --help.

See docs/datasets.md for where to get each dataset and the exact commands.
"""

from slotsweep.data.converters.cli import main

if __name__ == "__main__":
    main()
