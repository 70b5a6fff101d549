"""
`r2former`: the umbrella command; each verb lives in its own module with `register(subparsers)`.

    r2former map info MAP_DIR [--json]      r2former map verify MAP_DIR
    r2former eval ...                       r2former localize-bag ...
    r2former weights fetch dinov2-s14       r2former demo
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from r2former_ros.core.errors import R2FormerError
from r2former_ros.core.threads import apply_threads, prefer_passive_wait

# What `r2former --help` tells a user (the module docstring is for developers).
DESCRIPTION = ('Localize camera images against a place map built with `build_map`: inspect a '
               'map, measure recall and confidence, localize a recorded bag, calibrate on a '
               'second drive, fetch weights, or try everything on bundled data with '
               '`r2former demo`. `r2former VERB --help` explains each verb.')

# verb -> (module, one-line help). Only the verb being run is imported (its module registers the
# full parser); the others appear in `r2former --help` from this table, so the listing and every
# verb's --help stay instant (no torch, no faiss). test_cli_help checks the lines match.
VERBS = {
    'map': ('r2former_ros.cli.map_cmd', 'inspect or verify a map directory'),
    'eval': ('r2former_ros.cli.eval_cmd',
             'recall@N, latency and confidence on a dataset or a query bag'),
    'localize-bag': ('r2former_ros.cli.localize_bag',
                     'localize every image of a bag and write a result bag (MCAP)'),
    'weights': ('r2former_ros.cli.weights_cmd', 'fetch pretrained weights into the cache'),
    'demo': ('r2former_ros.cli.demo',
             'build a map and localize a query traverse from bundled data'),
    'calibrate': ('r2former_ros.cli.calibrate_cmd',
                  "fit a map's confidence on a second drive with GPS or poses"),
}


def _shipped(module_name: str) -> bool:
    """Whether a verb's module is in this build (found without importing it)."""
    return importlib.util.find_spec(module_name) is not None


def requested_verb(argv: list[str]) -> str | None:
    """Return the verb named on the command line (the first argument not an option)."""
    return next((arg for arg in argv if not arg.startswith('-')), None)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """
    Parser with every shipped verb; only ``verb`` (when given) gets its full arguments.

    Args:
        verb: the verb to run; None lists the verbs only (``r2former --help``).
    """
    parser = argparse.ArgumentParser(prog='r2former', description=DESCRIPTION)
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    subparsers = parser.add_subparsers(dest='verb', metavar='VERB')
    subparsers.required = True
    for name, (module_name, help_text) in VERBS.items():
        if not _shipped(module_name):
            continue
        if name == verb:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a verb; R2FormerError becomes one clear line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before any verb imports torch: OpenMP reads its wait policy once, when torch loads it.
    prefer_passive_wait()
    args = build_parser(requested_verb(argv)).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    # faiss announces at INFO which CPU build it tries and loads (it is imported lazily, after
    # this point): noise in every command's output, so only its warnings show.
    logging.getLogger('faiss').setLevel(logging.WARNING)
    try:
        if hasattr(args, 'threads'):  # the verbs that run a model (cli.model_args)
            apply_threads(args.threads)
        return int(args.func(args) or 0)
    except R2FormerError as err:
        print(f'r2former {args.verb}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'r2former {args.verb}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
