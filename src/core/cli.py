"""Shared CLI plumbing: logging setup and exception → exit-code mapping.

Every ``src/*.py`` module exposes ``main(argv=None) -> int`` built on :func:`run_cli`, so
bad input becomes one line on stderr (no traceback unless ``-v``) and a non-zero exit.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import json
import logging
import os
import re
import sys
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from src.core.errors import GroceryError, StoreError, bounded

log = logging.getLogger(__name__)
STORE_HELP = ("local store directory (default: $MLOPS_STORE, else the nearest .mlops/ at or above the working "
              "directory, else ./.mlops)")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``-v``/``-q``, ``--json`` and ``--no-progress``, the same on every command."""
    g = parser.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks on errors")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are drawn only when stderr is a terminal anyway)")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether a command may draw progress bars: not with ``--no-progress`` or ``-q``."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (tests and notebooks swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _OwnInfo(logging.Filter):
    """Below WARNING, only the suite's own records: a library's INFO (onnxruntime's int8 quantization logs
    ``Increased scale…`` through the root logger, 74 lines a training) is seen with ``-v`` only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in ("src", "__main__")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_OwnInfo())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "git", "optuna"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default, sort_keys=False))


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# OSErrors that mean "the disk refused the write" wherever they come from: exit 4, as for the store
WRITE_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS})


def printable(text: str) -> str:
    """``text`` on one line: control, format (bidi) and separator characters escaped as ``repr`` would
    (``\\n``, ``\\x1b``, ``\\u202e``), so a file name with a newline or a terminal escape in it
    cannot split a message or repaint the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def written_path(e: OSError) -> str | None:
    """The path a failed write was writing: a copy's, link's or rename's destination, else its one path."""
    f = e.filename2 if e.filename2 is not None else e.filename
    return None if f is None or isinstance(f, int) else os.fsdecode(f)


def write_failure(e: OSError) -> StoreError:
    """One line for a write the disk refused (full, over quota, read-only), naming the path."""
    where = printable(written_path(e) or "")
    full = e.errno != errno.EROFS
    return StoreError(f"{'no space left to write' if full else 'cannot write'} {where or 'a file'} "
                      f"({e.strerror or os.strerror(e.errno)})",
                      hint="free some space and re-run" if full else "choose a writable folder and re-run")


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse (and its subparsers) report usage errors as one ``error:`` line."""

    def error(message: str):
        print(f"error: {bounded(message)} (see {parser.prog} --help)", file=sys.stderr)  # argparse quotes the value
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _one_line_errors(sub)


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every action of ``parser`` and of its subcommands' parsers (argparse lists them nowhere public)."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


def flag_of(parser: argparse.ArgumentParser, param: str) -> str | None:
    """The flag (its long spelling) of the option whose ``dest`` is ``param``; None if the parser has none."""
    for action in _actions(parser):
        if action.dest == param and action.option_strings:
            return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
    return None


def speak_flags(text: str, params: Iterable[str], parser: argparse.ArgumentParser,
                flags: Mapping[str, str] | None = None) -> str:
    """``text`` (a library error's line) with each of its ``params`` written as the flag the user typed.

    A library message marks a parameter with backquotes: `` `window` `` becomes ``--window``,
    `` `window=300` `` ``--window 300`` and `` `force=True` `` the bare ``--force``. ``flags`` maps a
    parameter to its flag where no option's ``dest`` is that parameter (``extractor_path`` →
    ``--extractor``); a parameter this command has no flag for keeps its backquotes.
    """
    for param in params:
        flag = (flags or {}).get(param) or flag_of(parser, param)
        if flag:
            text = re.sub(rf"`{re.escape(param)}(?:=([^`]*))?`",
                          lambda m: flag if m.group(1) in (None, "True") else f"{flag} {m.group(1)}", text)
    return text


def _skip_final_collection() -> None:
    """At exit, leave the objects alive to the operating system instead of the garbage collector: with torch,
    timm and W&B loaded, the interpreter's final collections took about 2 s of every command after its last
    line (2-core machine; a bare `import timm` exits in 3.2 s instead of 5.2 s). Files and runs are closed by
    then (the commands close their own; W&B's exit handlers run before this one)."""
    gc.freeze()


_exit_hook: list[bool] = []


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            command: Callable[[argparse.Namespace], int | None],
            normalize: Callable[[list[str]], list[str]] | None = None,
            flags: Mapping[str, str] | None = None) -> int:
    """Parse ``argv``, run ``command(args)``, and turn project errors into exit codes.

    An error's ``params`` are printed as this parser's flags (:func:`speak_flags`; ``flags`` for the
    parameters whose flag has another name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not _exit_hook:  # registered before any run W&B opens, so that W&B's own exit handlers run first
        atexit.register(_skip_final_collection)
        _exit_hook.append(True)
    if normalize:
        argv = normalize(argv)
    _one_line_errors(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        return int(e.code or 0)
    setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        return int(command(args) or 0)
    except GroceryError as e:
        return _report(e, args, text=speak_flags(str(e), e.params, parser, flags))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... --json | head`: the reader left; no traceback, no second error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as e:  # a full disk anywhere (the writers that know better raise StoreError themselves)
        if e.errno not in WRITE_ERRNOS:
            raise
        return _report(write_failure(e), args, cause=e)


def _report(e: GroceryError, args: argparse.Namespace, cause: BaseException | None = None,
            text: str | None = None) -> int:
    if getattr(args, "verbose", False):
        log.error("failed", exc_info=cause or e)
    print(f"error: {printable(str(e) if text is None else text)}", file=sys.stderr)
    return e.exit_code
