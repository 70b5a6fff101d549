"""
`r2former`: the umbrella command. Each verb lives in its own module with `register(subparsers)`.

    r2former map info MAP_DIR [--json]      r2former map verify MAP_DIR
    r2former eval ...                       r2former localize-bag ...
    r2former weights fetch dinov2-s14       r2former demo
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from r2former_ros.core.errors import R2FormerError

# verb -> module; modules are imported only to build the parser, so `--help` stays honest.
VERBS = {
    'map': 'r2former_ros.cli.map_cmd',
    'eval': 'r2former_ros.cli.eval_cmd',
    'localize-bag': 'r2former_ros.cli.localize_bag',
    'weights': 'r2former_ros.cli.weights_cmd',
    'demo': 'r2former_ros.cli.demo',
}


def build_parser() -> argparse.ArgumentParser:
    """Parser with every verb whose module is importable."""
    parser = argparse.ArgumentParser(prog='r2former', description=__doc__.split('\n')[0])
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    subparsers = parser.add_subparsers(dest='verb', metavar='VERB')
    subparsers.required = True
    for module_name in VERBS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # verb not shipped in this build
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a verb; R2FormerError becomes one clear line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        return int(args.func(args) or 0)
    except R2FormerError as err:
        print(f'r2former {args.verb}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'r2former {args.verb}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
