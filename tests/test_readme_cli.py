"""The README's CLI reference against the argparse parser: same commands, same flags, the
choices and defaults it shows, the positional arguments.

The reference is the first ``text`` block under ``## CLI reference``: one
``python -m benchmarks COMMAND ...`` line per command (continued on indented lines), options
as ``[--flag]`` (no value), ``[--flag VALUE]`` (upper case: a placeholder; lower case: the
default; ``a|b|c``: the choices), ``[--flag [VALUE]]`` (an optional value), positionals in
upper case (``[NAME]`` when optional).
"""

from __future__ import annotations

import argparse
import re

import pytest

from benchmarks.cli import _parser
from tests.conftest import REPO_ROOT

PROGRAM = "python -m benchmarks"
# An option in brackets, possibly holding one nested bracket: [--compile [BACKEND]].
OPTION_GROUP = re.compile(r"\[(--[^\[\]]*(?:\[[^\]]*\])?[^\[\]]*)\]")
OPTION = re.compile(r"^(--[a-z0-9-]+)(?:\s+(\[?)([^\s\[\]]+)\]?)?")


def _reference_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## CLI reference", 1)[1]
    match = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert match, "README: no ```text block under ## CLI reference"
    return match.group(1)


def _documented_commands() -> dict[str, str]:
    """Command name -> the rest of its (joined) reference line."""
    commands: dict[str, str] = {}
    current = None
    for line in _reference_block().splitlines():
        if line.startswith(PROGRAM):
            current, _, rest = line[len(PROGRAM) :].strip().partition(" ")
            assert current not in commands, f"README documents {current} twice"
            commands[current] = rest
        elif line.strip():
            assert current is not None, f"README: continuation line before a command: {line}"
            commands[current] += " " + line.strip()
    return commands


def _documented_options(text: str) -> dict[str, tuple[str | None, bool]]:
    """``--flag -> (value as shown or None, value optional)`` for each bracketed option."""
    options = {}
    for group in OPTION_GROUP.findall(text):
        match = OPTION.match(group.strip())
        assert match, f"README: cannot read the option [{group}]"
        flag, optional, value = match.groups()
        assert flag not in options, f"README: {flag} shown twice"
        options[flag] = (value, bool(optional))
    return options


def _documented_positionals(text: str) -> list[str]:
    return re.findall(r"\[?([A-Z][A-Z_]*)\]?", OPTION_GROUP.sub("", text))


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def test_the_reference_documents_every_command_and_no_other() -> None:
    assert set(_documented_commands()) == set(_subcommands())


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_flag_of_the_parser_is_documented_and_no_other(command: str) -> None:
    documented = _documented_options(_documented_commands()[command])
    assert set(documented) == set(_options(_subcommands()[command])), command


def _check_values(command: str, text: str) -> None:
    """Each value shown for ``command``'s options in ``text`` agrees with the parser."""
    options = _options(_subcommands()[command])
    for flag, (value, optional) in _documented_options(text).items():
        action = options[flag]
        where = f"{command} {flag}"
        takes_value = action.nargs != 0
        assert (value is not None) == takes_value, f"{where}: value shown {value!r}"
        if value is None:
            continue
        assert optional == (action.nargs == "?"), f"{where}: optional value"
        if "|" in value:
            if action.choices is not None:
                assert sorted(value.split("|")) == sorted(action.choices), where
            continue
        if value.isupper() or not value[0].isalnum():  # a placeholder: NAME, MODEL=PATH
            continue
        assert value == str(action.default), f"{where}: README {value}, default {action.default}"


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_values_choices_and_defaults_shown_are_the_parser_s(command: str) -> None:
    _check_values(command, _documented_commands()[command])


@pytest.mark.parametrize(
    "wrong",
    [
        "[--dataset cifar10|cifar100|digits|digits64|imagenet|mnist|svhn]",  # a choice too many
        "[--profile paper|quick]",  # a choice missing
        "[--runs-dir checkpoints]",  # another default
        "[--download DIR]",  # a value for a switch
        "[--compile BACKEND]",  # an optional value shown as required
    ],
)
def test_a_wrong_reference_is_caught(wrong: str) -> None:
    with pytest.raises(AssertionError):
        _check_values("run", wrong)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_positional_arguments_are_the_parser_s(command: str) -> None:
    parser = _subcommands()[command]
    expected = [a.dest.upper() for a in parser._actions if not a.option_strings]
    assert _documented_positionals(_documented_commands()[command]) == expected
