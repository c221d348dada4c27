"""Errors the job reports to users as one line, each with its exit code."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from distunlearn.run_report import RunReport

#: How a front end spells a parameter: ``(name, value)`` to text; ``value`` is None when only the name is shown.
Spelling = Callable[[str, "str | None"], str]


class DistunlearnError(Exception):
    """Bad input or a failed precondition; the job stops before writing anything."""

    exit_code = 1


class ParameterError(DistunlearnError):
    """Bad input that names the parameters at fault. ``template`` writes each parameter of ``params`` as
    ``{name}`` or, with a value, ``{name=value}``; names are the Python ones (``ridge``, ``alpha_rel``: the
    config keys and the API's keywords). ``str()`` spells them so (``ridge``, ``ridge=1e-3``, ``in_place=True``);
    ``spelled(flag)`` as the console command's flags (``--ridge``, ``--ridge 1e-3``, ``--in-place``).
    ``parameter`` is the first of ``params``, the one the error is about."""

    def __init__(self, template: str, *params: str):
        if not params:
            raise TypeError("ParameterError needs the names of its parameters")
        self.template, self.params = template, params
        super().__init__(self.spelled(keyword))

    @property
    def parameter(self) -> str:
        return self.params[0]

    def spelled(self, spelling: Spelling) -> str:
        """The message with each parameter written by ``spelling``."""
        pattern = re.compile(r"\{(%s)(?:=([^{}]*))?\}" % "|".join(map(re.escape, self.params)))
        return pattern.sub(lambda m: spelling(m[1], m[2]), self.template)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?")


def keyword(name: str, value: str | None) -> str:
    """A parameter as a Python keyword: ``ridge``, ``ridge=1e-3``, ``objective='downstream'``, ``output=PATH``."""
    if value is None:
        return name
    if not (value in ("True", "False", "None") or value.isupper() or _NUMBER.fullmatch(value)):  # PATH: a placeholder
        value = repr(value)
    return f"{name}={value}"


def flag(name: str, value: str | None) -> str:
    """A parameter as a console flag: ``--ridge``, ``--ridge 1e-3``, ``--in-place`` (a switch set True)."""
    text = "--" + name.replace("_", "-")
    return text if value in (None, "True") else f"{text} {value}"


def labelled(text: str, label: str) -> DistunlearnError:
    """An error ``text`` about the input ``label`` (which the text contains): a ``ParameterError`` when the
    label names parameters as ``{name}`` (``"{source}"``, ``"{unwanted}"``), else a plain error
    (a label such as ``tables.posts`` of the erasure config)."""
    params = re.findall(r"\{(\w+)\}", label)
    return ParameterError(text, *params) if params else DistunlearnError(text)


def config_key(name: str, value: str | None) -> str:
    """A parameter as a key of a TOML config file: ``ridge``, ``ridge = 1e-3``, ``objective = "downstream"``."""
    if value is None:
        return name
    if value in ("True", "False"):
        return f"{name} = {value.lower()}"
    return f"{name} = {value}" if value.isupper() or _NUMBER.fullmatch(value) else f'{name} = "{value}"'


def message(exc: BaseException, spelling: Spelling = keyword) -> str:
    """One error's text, its parameters (if it names any) written by ``spelling``."""
    return exc.spelled(spelling) if isinstance(exc, ParameterError) else str(exc)


class UsageError(DistunlearnError):
    """A flag or config key the command does not take, such as an old spelling of one it does (exit code 2,
    as argparse's own usage errors)."""

    exit_code = 2


class InfeasibleError(DistunlearnError):
    """No deletion set of the evaluated rules meets both thresholds; ``report`` says how close each got."""

    exit_code = 2

    def __init__(self, message: str, report: RunReport | None = None):
        super().__init__(message)
        self.report = report


class ConflictError(ParameterError):
    """Delta reported a conflict with another writer at every try of the edit; nothing of the run committed.
    The message names the parameters of the rerun (``run_id``, ``max_retries``)."""

    exit_code = 3
