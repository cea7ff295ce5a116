"""realtalk: real-time visual dubbing (RealTalk, ECCV 2024)."""

__version__ = "0.1.0"
