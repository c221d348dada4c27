"""``docs/cli.md`` is the parser's help as it is now: regenerate it with ``make docs`` after changing a flag."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from distunlearn.arguments import build_parser
from distunlearn.cli_docs import render

PAGE = Path(__file__).parents[1] / "docs" / "cli.md"


def test_the_page_is_the_parsers_help():
    assert PAGE.read_text() == render(), "docs/cli.md is out of date: run make docs"


def test_every_flag_of_every_command_is_on_the_page():
    page = PAGE.read_text()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        section = page.split(f"## distunlearn {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:   # an old spelling, kept only to name the new one
                assert not any(re.search(re.escape(flag) + r"(?![\w-])", section) for flag in action.option_strings), \
                    f"{name} {action.option_strings}"
                continue
            for flag in action.option_strings:
                assert flag in section, f"{name} {flag}"
