"""`--help` of every command is instant: it never imports torch (lazy imports per verb)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from r2former_ros.cli import main as cli

HELP_COMMANDS = [
    ('r2former',), ('r2former', 'map'), ('r2former', 'eval'), ('r2former', 'localize-bag'),
    ('r2former', 'weights'), ('r2former', 'demo'), ('r2former', 'calibrate'), ('build_map',),
]

# Runs every --help in one fresh interpreter and prints the first command that loaded torch.
_PROBE = """
import contextlib, io, sys
from r2former_ros.cli import build_map, main
for command in {commands!r}:
    run = build_map.main if command[0] == 'build_map' else main.main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            run([*command[1:], '--help'])
        except SystemExit:
            pass
    assert 'usage:' in out.getvalue(), command
    if 'torch' in sys.modules:
        print('torch imported by', ' '.join(command))
        break
else:
    print('no torch')
"""


def test_help_never_imports_torch():
    probe = _PROBE.format(commands=HELP_COMMANDS)
    done = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == 'no torch', done.stdout + done.stderr


def _verb_helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help for choice in action._choices_actions}


@pytest.mark.parametrize('verb', list(cli.VERBS))
def test_verb_listing_matches_the_verb_module(verb):
    # `r2former --help` shows the table's line; the module registers its own: they must agree.
    listed = _verb_helps(cli.build_parser())[verb]
    registered = _verb_helps(cli.build_parser(verb))[verb]
    assert listed == registered == cli.VERBS[verb][1]


def test_the_verb_is_found_after_global_options():
    assert cli.requested_verb(['-v', 'map', 'info', 'x']) == 'map'
    assert cli.requested_verb(['--help']) is None
    with pytest.raises(SystemExit):
        cli.build_parser('nope').parse_args(['nope'])


def _every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    """Each command's parser, the nested ones (`map info`, `weights fetch`) included."""
    from r2former_ros.cli import build_map

    found = [('build_map', build_map.build_parser()), ('r2former', cli.build_parser())]
    for verb in cli.VERBS:
        root = cli.build_parser(verb)
        pending = [(f'r2former {verb}', _subparsers(root)[verb])]
        while pending:
            name, parser = pending.pop()
            found.append((name, parser))
            pending.extend((f'{name} {sub}', p) for sub, p in _subparsers(parser).items())
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_option_says_what_it_does():
    """No option shows up in --help without a line of its own (localize-bag had six)."""
    silent = [f'{name} {action.option_strings[0]}' for name, parser in _every_parser()
              for action in parser._actions
              if action.option_strings and action.help != argparse.SUPPRESS
              and not (action.help or '').strip()]
    assert silent == []


def test_shared_flags_are_spelled_alike_in_every_verb():
    """The reranking depth is --rerank-top-n everywhere (--rerank-top stays as an alias)."""
    spellings = {}
    for name, parser in _every_parser():
        for action in parser._actions:
            if any(o.startswith('--rerank-top') for o in action.option_strings):
                spellings[name] = tuple(action.option_strings)
    assert set(spellings) >= {'r2former eval', 'r2former localize-bag', 'r2former calibrate',
                              'r2former demo'}
    assert set(spellings.values()) == {('--rerank-top-n', '--rerank-top')}


def test_the_top_level_help_speaks_to_users():
    """`r2former --help` describes what the tool does, not how the code is organised."""
    text = ' '.join(cli.build_parser().format_help().split())
    assert 'module' not in text and 'register' not in text
    assert 'build_map' in text and 'r2former demo' in text
