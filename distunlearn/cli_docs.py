"""``docs/cli.md``: every command and flag, rendered from the argparse parser (``make docs``); a test
fails when the file and the parser differ.

    python -m distunlearn.cli_docs > docs/cli.md
"""
from __future__ import annotations

import argparse
import os

from distunlearn.arguments import build_parser

WIDTH = "100"   # the help's line width, fixed so the page does not depend on the terminal


def render() -> str:
    """The page: the top-level help, then each command's ``--help`` as printed."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        parts = ["# Commands and flags", "",
                 "Generated from the command's parser by `make docs` (`python -m distunlearn.cli_docs`); "
                 "a test fails when it is out of date.", "", "```", parser.format_help().rstrip(), "```"]
        for name, sub in commands.items():
            parts += ["", f"## distunlearn {name}", "", "```", sub.format_help().rstrip(), "```"]
        return "\n".join(parts) + "\n"
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


if __name__ == "__main__":
    print(render(), end="")
