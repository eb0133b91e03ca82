"""slotsweep: VideoSAUR/DINOSAUR object-centric learning with a Hydra sweep platform."""

__version__ = "0.1.0"
