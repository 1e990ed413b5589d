"""rltui: train MPO and TRPO agents and watch them live in the terminal."""

__version__ = "0.1.0"
