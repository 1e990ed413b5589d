"""Command-line entry point (`rltui`, `python -m rltui`)."""

from __future__ import annotations

import argparse

from rltui import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rltui", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rltui {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("rltui: the training engine and dashboard are not built yet.")
    return 0
