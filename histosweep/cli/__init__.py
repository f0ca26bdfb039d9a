"""The `histosweep` command: one entry point, one module per subcommand.

Heavy imports (torch, timm, optuna) happen inside each subcommand's `run`, so
`histosweep --help` answers at once. Exercise: `histosweep --help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import NoReturn

from histosweep.cli._common import (
    COMMANDS,
    COMMON_OPTIONS,
    debug_enabled,
    option_parents,
    print_error,
)
from histosweep.exceptions import HistosweepError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block; `--help` named instead, as for
    the other usage errors) and never echoes a storage password (`--storage URL` given to a
    command that takes no --storage is quoted back as an unrecognized argument)."""

    def error(self, message: str):
        from histosweep.storage import redact_text

        message = f"{message} ({self.prog} --help lists its options)"
        self.exit(2, f"{self.prog}: error: {redact_text(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    from histosweep import __version__

    # NOTE: allow_abbrev=False on every parser: `--ensembl` is a typo to name (_unrecognized),
    # not a prefix silently taken for --ensemble.
    parser = _Parser(
        prog="histosweep",
        description="Hyperparameter search for dual-branch histology subtype classifiers.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"histosweep {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(f"histosweep.cli.{module_name}")
        # NOTE: a command module without OPTIONS gets every common option (the old contract)
        parents = option_parents(getattr(module, "OPTIONS", COMMON_OPTIONS))
        sub = subparsers.add_parser(name, help=summary, description=summary, parents=parents,
                                    allow_abbrev=False)
        module.add_arguments(sub)
        sub.set_defaults(_module=module, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _remember_secrets(argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        _unknown_command(parser, argv[0])
    if argv and argv[0].startswith("-") and argv[0].split("=")[0] not in parser._option_string_actions:
        _misplaced_option(parser, argv)  # `histosweep --debug studies`: it goes after the command
        _unrecognized(parser, argv[:1])  # `histosweep --vers`: not 'COMMAND is required'
    args, extras = parser.parse_known_args(argv)
    if extras:  # argparse would blame the top-level usage; name the subcommand's close flags
        _unrecognized(args._parser, extras)
    try:
        code = args._module.run(args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
        return 0 if code is None else int(code)
    except BrokenPipeError:
        return _reader_went_away()
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into lines
        if debug_enabled(args):
            _print_traceback()
        print_error(_one_line(exc))
        return 1


def _remember_secrets(argv: list[str]) -> None:
    """Passwords of the URLs on the command line and in $HISTOSWEEP_STORAGE, parsed before
    argparse can quote them back in a usage error."""
    import os

    from histosweep.storage import remember_secrets_in

    remember_secrets_in(argv, dict(os.environ))


def _misplaced_option(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """An option of the command written before it: one line saying where it goes, exit 2."""
    from histosweep.storage import redact_text

    command = next((word for word in argv[1:] if word in COMMANDS), None)
    flag = argv[0].split("=")[0]
    if command is None:
        return
    sub = parser._subparsers._group_actions[0].choices[command]
    if flag in sub._option_string_actions:
        message = (f"{flag} goes after the command: histosweep {command} {flag} ... "
                   f"(histosweep {command} --help lists its options)")
        parser.exit(2, f"{parser.prog}: error: {redact_text(message)}\n")


def _unknown_command(parser: argparse.ArgumentParser, word: str) -> NoReturn:
    """`histosweep exprot-best`: one line, exit 2 (a usage error, as argparse's), with the close
    command; Python 3.11's argparse has no suggest_on_error and lists all of them instead."""
    import difflib

    from histosweep.storage import redact_text

    close = difflib.get_close_matches(word, list(COMMANDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    message = f"unknown command {word!r}{hint} (histosweep --help lists the commands)"
    parser.exit(2, f"{parser.prog}: error: {redact_text(message)}\n")


def _unrecognized(sub: argparse.ArgumentParser, extras: list[str]) -> NoReturn:
    """`worker S --ntrials 3`: one line, exit 2, with the subcommand's flags that are close."""
    import difflib

    from histosweep.storage import redact_text

    known = [o for action in sub._actions for o in action.option_strings if o.startswith("--")]
    close = [m for word in extras if word.startswith("--")
             for m in difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.75)]
    hint = f"; did you mean {' or '.join(dict.fromkeys(close))}?" if close else ""
    message = f"unrecognized arguments: {' '.join(extras)}{hint} ({sub.prog} --help lists its flags)"
    sub.exit(2, f"{sub.prog}: error: {redact_text(message)}\n")


def _reader_went_away() -> int:
    """`histosweep status S | head -2`: end quietly, as a Unix tool killed by SIGPIPE does."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the exit's flush of what is left must not fail again
    return 128 + 13  # 128 + SIGPIPE, the status `seq 1 100000 | head -1` gives seq


def _print_traceback() -> None:
    """The current traceback on stderr with storage passwords and known secrets hidden."""
    from histosweep.storage import redact_text

    print(redact_text(traceback.format_exc()), end="", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    """Our errors are written for people; anything else is a bug, named as such."""
    if isinstance(exc, HistosweepError):
        return str(exc)
    name = type(exc).__name__
    return f"unexpected {name}: {exc} (rerun with --debug for a traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
