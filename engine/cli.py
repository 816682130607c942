"""The `sigmatch` command. Every error ends in one line on stderr and a non-zero exit."""
from __future__ import annotations

import contextlib
import errno
import functools
import gc
import io
import logging
import math
import os
import re
import signal
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Optional

# numpy's OpenBLAS starts a thread per core when numpy is imported, and each spins for
# about 0.1 s of CPU before it sleeps; the command does no linear algebra, and on a host
# whose cores are all busy (the CSV reader's threads, --workers N) that spin is taken from
# them. Set before anything imports numpy; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from engine.closedloop.uplift import MIN_CONTROLS, intervals_ahead, uplifts
from engine.errors import LoadError, SigmatchError, StreamError, describe_os_error
from engine.privacy import JsonLogFormatter, LogFormatter, MaskedStream, escape_controls, scrub
from engine.wording import per_second, plural

__all__ = ["main"]

log = logging.getLogger("sigmatch")


def _plain_digits(value, param, ctx, fail) -> None:
    # int() takes "1_0", " 2", "+2" and "２" (full width) too: a value a person did not
    # mean as that number, for an option that may rewrite a state (helper-119)
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value):
        fail(f"{value!r} is not a valid whole number.", param, ctx)


class Integer(click.types.IntParamType):
    """click's INT in plain digits only (gen's counts, whose ranges gen checks itself)."""
    name = "whole number"

    def convert(self, value, param, ctx):
        _plain_digits(value, param, ctx, self.fail)
        return super().convert(value, param, ctx)


class WholeNumber(click.IntRange):
    """click.IntRange whose refusal of text that is no number says so: click's own reads
    "'abc' is not a valid integer range" (the range is the type's name, not the value's)."""
    name = "whole number"

    def convert(self, value, param, ctx):
        _plain_digits(value, param, ctx, self.fail)
        return super().convert(value, param, ctx)

    def _describe_range(self) -> str:
        # the bounds with thousands separators: an error line masks any run of 7 digits or
        # more (privacy.scrub), which made 10**11 read '100*****0000'
        if self.max is None:
            return f"x{'>' if self.min_open else '>='}{self.min:,}"
        low = "" if self.min is None else f"{self.min:,}{'<' if self.min_open else '<='}"
        return f"{low}x{'<' if self.max_open else '<='}{self.max:,}"


# --log-format json: the final error line is a JSON log record too, so that every line on
# stderr parses (set by main, before any command runs)
_json_errors = False


def _fail(message: str, code: int = 1):
    # the message may quote a row, a path or a request: numbers masked, one line (privacy.scrub)
    if _json_errors:
        record = logging.LogRecord("sigmatch", logging.ERROR, __file__, 0, message, None, None)
        click.echo(JsonLogFormatter().format(record), err=True)
    else:
        click.echo(f"sigmatch: error: {scrub(message)}", err=True)
    sys.exit(code)


def _one_line_errors(fn):
    """Turn the errors an operator can act on into one line and exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # The reader went away (`sigmatch check ... | head`): nothing to report.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except SigmatchError as e:
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except OSError as e:
            stream = _standard_stream_of(e)
            _fail(f"{stream}: {e.strerror or e}" if stream else describe_os_error(e))
        except MemoryError:
            _fail("out of memory")
    return wrapper


def _standard_stream_of(error: OSError) -> Optional[str]:
    """"standard output" (or "standard error") when `error` names no file and was raised
    writing to that stream: `sigmatch report > /dev/full` said only "No space left on
    device", as if a file of the report's had failed. Every command writes through
    click.echo, whose frame holds the stream; None for any other error."""
    if error.filename is not None:
        return None
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    for value in tb.tb_frame.f_locals.values():
        if isinstance(value, io.IOBase):
            try:
                number = value.fileno()
            except (OSError, ValueError):
                continue
            if number in (1, 2):
                return "standard output" if number == 1 else "standard error"
    return None


# funnel reasons, beside the suppressed_* ones, that drop an action at its emission
DROPPED = ("disabled", "ended", "absent")

FUNNEL_LEGEND = (
    "matched: trigger events that met the campaign's conditions; sched: delayed actions scheduled; "
    "recheck: delayed actions dropped when rechecked at their due time; suppr: dropped at their due time "
    "because the campaign was disabled or past its end or a marker it waits to stay unset was set, or suppressed by the "
    "contact policy, a budget or the pending bound; sent, control, global: contacts sent, held out as the campaign's "
    "control group, and held out as the global control group (global_holdout); conv: conversions of all three; uplift: conversion rate of sends minus that of controls, in percentage points, "
    f"with its 95% interval (Newcombe), or 'too few controls' below {MIN_CONTROLS} controls.")


def format_funnel(stats: dict, *, legend: bool = False) -> str:
    """The per-campaign funnel as a fixed-width table; with `legend`, what each column means."""
    columns = ["campaign", "matched", "sched", "recheck", "suppr", "sent", "control", "global", "conv", "uplift [95% CI]"]
    rows = []
    funnels = stats["campaigns"]
    measured = uplifts([(f["sent"], f["converted_send"], f["control"], f["converted_control"])
                        for f in funnels.values()])
    for (cid, f), m in zip(funnels.items(), measured):
        suppressed = sum(v for k, v in f.items() if k.startswith("suppressed_") or k in DROPPED) + f["overflow"]
        converted = f["converted_send"] + f["converted_control"] + f.get("converted_global_control", 0)
        shown = m.shown() if f["control"] else ""
        rows.append([cid, f"{f['matched']:,}", f"{f['scheduled']:,}", f"{f['recheck_failed']:,}", f"{suppressed:,}",
                     f"{f['sent']:,}", f"{f['control']:,}", f"{f.get('global_control', 0):,}", f"{converted:,}", shown])
    table = [columns] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = []
    for r in table:
        cells = [r[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(r[1:-1], widths[1:-1])] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    if legend:
        lines += [""] + textwrap.wrap(FUNNEL_LEGEND, 100)
    return "\n".join(lines)


def format_run(stats: dict) -> str:
    run = stats["run"]
    bad = sum(run["bad_events"].values())
    timing = stats.get("timing") or {}
    eps = timing.get("events_per_s")
    speed = f", {per_second(eps)}" if eps else ""
    unknown = plural(run["unknown_subscribers"], "unknown subscriber")
    # the bytes say what the count cannot: one damaged header can make one bad value of many events
    inside = f" in {plural(run.get('bad_bytes', 0), 'byte')}" if bad else ""
    return (f"{plural(run['events'], 'event')} ({bad:,} bad{inside}, {unknown}, {run.get('late_events', 0):,} late), "
            f"{plural(run['actions'], 'action')}, {plural(run['conversions'], 'conversion')} "
            f"in {timing.get('elapsed_s', 0):.2f} s{speed}")


class _OptionsOnce(click.Command):
    """An option that takes a value, given twice, is refused in one line: click keeps the
    last, so `reshard --workers 2 --workers 3` rewrote the state for 3 without a word
    (helper-119). Options that may repeat (multiple) and flags are left alone."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing and not any(token in ("-h", "--help") for token in args):
            self._refuse_repeats(ctx, args)
        return super().parse_args(ctx, args)

    def _refuse_repeats(self, ctx: click.Context, args: list[str]) -> None:
        valued = {name: param for param in self.params
                  if isinstance(param, click.Option) and not param.is_flag and not param.count
                  for name in param.opts + param.secondary_opts}
        seen: dict[str, str] = {}
        at = 0
        while at < len(args) and args[at] != "--":
            token = args[at]
            at += 1
            name, equals, _ = token.partition("=") if token.startswith("--") else (token, "", "")
            param = valued.get(name)
            if param is None:
                continue
            if not param.multiple:
                if param.name in seen:
                    raise click.UsageError(f"{name} is given twice ({seen[param.name]} before): give it once", ctx)
                seen[param.name] = name
            if equals or at == len(args):
                continue
            # its value, whatever it looks like (a multiple one's too); one it may do without
            # (--ray [ADDRESS]) only when the next word does not look like an option, as click
            if not (getattr(param, "_flag_needs_value", False) and args[at].startswith("-")):
                at += 1


class _OneLineUsageGroup(click.Group):
    """A group below the top one (console): its commands refuse repeats too."""
    command_class = _OptionsOnce


class _OneLineUsage(click.Group):
    """click's own errors (a missing argument, a bad option value, an unknown command) as one
    line with the command to ask for help, exit 2 as click has it: its four-line usage block is
    not the one-line error every other mistake gives."""

    command_class = _OptionsOnce
    group_class = _OneLineUsageGroup

    def main(self, *args, **kwargs):
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        # before --version and --help, which are written while the arguments are parsed
        _open_closed_standard_streams()
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as e:
            if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                # `sigmatch` alone (click 8.2 on): the help as --help shows it, not squeezed
                # into an error line; exit 2 as click has it
                click.echo(e.format_message(), err=True)
                sys.exit(e.exit_code)
            where = e.ctx.command_path if e.ctx is not None else "sigmatch"
            _fail(f"{' '.join(e.format_message().split())} (see: {where} --help)", e.exit_code)
        except click.ClickException as e:
            _fail(" ".join(e.format_message().split()), e.exit_code)
        except OSError as e:
            # the help or the version, written to a full or closed standard output
            stream = _standard_stream_of(e)
            _fail(f"{stream}: {e.strerror or e}" if stream else describe_os_error(e))
        except click.Abort as e:
            hidden = _write_error_behind(e)
            if hidden is not None:
                _fail(describe_os_error(hidden))
            said = "stopped by SIGTERM" if isinstance(e.__context__, _Terminated) else "aborted"
            partial = getattr(e.__context__, "incomplete_output", None)
            _fail(f"{said}; the output in {partial} is incomplete (no stats.json)" if partial else said)
        _freeze_at_exit()
        sys.exit(code if isinstance(code, int) else 0)


# what a file that cannot be written raises: a full disk, a quota, a size limit, a device error,
# a file system remounted read-only
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def _write_error_behind(abort: BaseException) -> Optional[OSError]:
    """The write error an interruption came upon (Ctrl-C or SIGTERM while a full disk's
    error was on its way out, through the cleanup that removes the open files): said
    instead of "aborted", which would hide that the disk is full. None when there is none."""
    seen, error = set(), abort.__context__
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
            return error
        error = error.__context__
    return None


_freeze_registered = False


def _freeze_at_exit() -> None:
    """The interpreter's last collection at exit walks every object still alive: after a
    replay of 2M subscribers about 0.1 s, a twentieth of a short run's wall time. Frozen
    objects are left out of that walk (and still torn down as usual). Frozen from atexit,
    not here: a program that runs commands in its own process (CliRunner, a host) catches
    the SystemExit and goes on, and must not be left with its objects frozen for good."""
    global _freeze_registered
    if not _freeze_registered:
        import atexit
        atexit.register(gc.freeze)     # atexit runs before the interpreter's collections
        _freeze_registered = True


class GivenPath(click.Path):
    """click.Path that refuses an empty or blank string: click makes "" into ".", so `--out ""` or
    `--state "$UNSET"` quietly meant the current directory (for --state, a service keeping
    its checkpoints wherever it was started). A directory (file_okay=False) is also refused
    in sigmatch's own words and exit 1, as _check_out refuses an --out: as `-` (`replay --out -`
    made a directory named "-" where the user meant standard output), and as something that
    exists and is not a directory (click said so in its option parser's words, exit 2). A
    file, written (`created`) or read, is not `-` either, unless the parameter allows it
    (allow_dash: `send` reads standard input).

    `created`: the command makes this path (a directory), or the missing directories above it
    (a file it writes). Then a new directory directly under / is refused in the same way: it
    is what an unset variable makes of "$DIR/x", and no such run ever meant it (make it first
    if it is meant: one that exists is taken)."""

    def __init__(self, *args, created: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.created = created

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            # a blank name is as surely an unset variable as an empty one: `--out " "` made
            # a directory named " " here
            self.fail(f"{'an empty' if value == '' else 'a blank'} path (for the current directory, give .)",
                      param, ctx)
        if value == "-" and not self.file_okay:
            raise click.ClickException(f"{_named(param)} -: names a directory, and - is not standard output "
                                       "here: give a directory (./- for one named -)")
        if value == "-" and self.created:
            # `report --html -` wrote a file named "-" and said "html: -"
            raise click.ClickException(f"{_named(param)} -: names a file the command writes, and - is not "
                                       "standard output here: give a file name (./- for one named -)")
        if value == "-" and self.dir_okay is False and not self.allow_dash and not self.created:
            # `replay CONFIG - < trace` said "-: no such trace file"
            hint = ("; `sigmatch run --stdin` reads events from standard input"
                    if param is not None and param.name == "traces" else "")
            raise click.ClickException(f"{_named(param)} -: names a file, and - is not standard input here: give a "
                                       f"file name (./- for one named -){hint}")
        if isinstance(value, str) and not self.file_okay and os.path.exists(value) and not os.path.isdir(value):
            what = "a file, not a directory" if os.path.isfile(value) else "not a directory"
            raise click.ClickException(f"{_named(param)} {value}: is {what}")
        if isinstance(value, str) and self.created:
            top = _new_under_root(value, directory=not self.file_okay)
            if top is not None:
                raise click.ClickException(f"{_named(param)} {value}: {top} would be a new directory directly under "
                                           f"/, as when a variable in \"$DIR{value}\" is unset: make {top} first "
                                           "if it is meant")
        if isinstance(value, str) and self.created and ".." in value:
            # `--out base/missing/../out` made base/missing too, and left it empty
            from engine.sinks import without_missing_parents
            value = str(without_missing_parents(value))
        return super().convert(value, param, ctx)


def _new_under_root(value: str, *, directory: bool) -> Optional[str]:
    """The directory directly under / that writing to the absolute path `value` would make (for
    a file, only one above it), or None. A relative path is not what an unset variable leaves."""
    parts = Path(value).parts
    if parts and parts[0] == "//":
        # POSIX keeps two leading slashes as a root of their own; Linux reads them as /
        # (two unset variables: "$A/$B/x")
        parts = ("/",) + parts[1:]
    if len(parts) < 2 or parts[0] != "/" or (len(parts) == 2 and not directory):
        return None
    top = os.path.join("/", parts[1])
    return None if os.path.lexists(top) else top


def _named(param: Optional[click.Parameter]) -> str:
    """How an error names `param`: an option as it is spelt (--out), an argument by its
    metavar (DIRECTORY)."""
    if isinstance(param, click.Option):
        return param.opts[0]
    return param.human_readable_name if param is not None else "path"


class Seconds(click.FloatRange):
    """A duration in seconds: a finite number in the range, at most a year (nan and inf
    pass click's FloatRange, and a service would wait forever or never; 1e308 seconds is
    forever too)."""

    name = "number of seconds"
    LONGEST_S = 366 * 86_400

    def convert(self, value, param, ctx):
        # float() takes "1_0", " 3", "+1" and "５" (full width) too, as int() does
        if isinstance(value, str) and not re.fullmatch(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", value):
            self.fail(f"{value!r} is not a valid number of seconds.", param, ctx)
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a number of seconds", param, ctx)
        if value > self.LONGEST_S:
            self.fail(f"{value:g} seconds is more than a year", param, ctx)
        return value


@click.group(cls=_OneLineUsage, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object per log line (structured logs for a service).")
@click.version_option(package_name="sigmatch")
def main(verbose: bool, log_format: str):
    """sigmatch: signalling-triggered precision marketing."""
    global _json_errors
    _json_errors = log_format == "json"
    if logging.getLogger().handlers:
        # a host that set up logging itself (pytest, a program calling main) keeps it
        return
    _own_standard_error(LogFormatter() if log_format == "text" else JsonLogFormatter(),
                        logging.INFO if verbose else logging.WARNING)


class _ClosedOutput(io.TextIOBase):
    """Standard output its caller closed (`>&-`): every write fails as on a closed descriptor,
    so that `sigmatch report OUT >&-` fails in one line rather than exit 0 with its report
    gone (helper-122). Its number, 1, is /dev/null's meanwhile: no file opened later takes it."""

    encoding = "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor (closed by the caller)")

    def flush(self) -> None:
        pass        # nothing is held back: the interpreter's flush at exit has nothing to say

    def fileno(self) -> int:
        return 1


def _open_closed_standard_streams() -> None:
    """A descriptor 0, 1 or 2 that the caller closed (`2>&-`) is opened on /dev/null: the
    first file this process opened would otherwise take its number, and a log line meant
    for standard error land in an output file. Python left the stream None; it becomes one
    on /dev/null (stdin stays None: `--stdin` refuses a closed one in so many words). With
    stderr closed the service wrote nothing, processed nothing, and exited 120."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    if sys.stdout is None or 1 in closed:
        # what the command writes there is lost: said as `cat >&-` says it, not dropped
        sys.stdout = _ClosedOutput()
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def _own_standard_error(formatter: logging.Formatter, level: int) -> None:
    """Make every line this process writes to stderr safe to keep (engine.privacy): log
    records scrubbed by `formatter`; uncaught exceptions, in any thread, logged as records;
    and stderr itself masked, for what libraries write there directly (socketserver's
    traceback of a failed request, warnings)."""
    stream = MaskedStream(sys.stderr)
    sys.stderr = stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)

    def uncaught(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
        else:
            log.critical("uncaught %s", kind.__name__, exc_info=(kind, value, traceback))

    def uncaught_in_thread(args):
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread is not None else "?"
            log.critical("uncaught %s in thread %s", args.exc_type.__name__, name,
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def unraisable(event):
        # Ctrl-C landing in a generator's cleanup at exit (the trace reader's, closed by the
        # collector) would print "Exception ignored in" and a traceback after the error line
        if event.exc_type is not None and issubclass(event.exc_type, KeyboardInterrupt):
            return
        sys.__unraisablehook__(event)

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
    sys.unraisablehook = unraisable


class _ReplayCommand(_OptionsOnce):
    """`replay`, whose `--ray [ADDRESS]` takes the next word as its address: `replay CONFIG
    --ray TRACE --out OUT` took the trace for the cluster and said `Missing argument
    'TRACES...'`, naming neither."""

    def parse_args(self, ctx, args):
        written = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.MissingParameter as e:
            taken = ctx.params.get("ray_address")
            if e.param is not None and e.param.name == "traces" and taken and Path(taken).exists():
                if f"--ray={taken}" in written:
                    raise click.UsageError(f"--ray={taken}: --ray takes the cluster's address, and {taken} is a "
                                           f"file; give the traces after CONFIG", ctx) from None
                raise click.UsageError(f"--ray took {taken} for the cluster's address, and no trace is left: give "
                                       f"the traces before --ray, or write --ray=ADDRESS", ctx) from None
            raise


@main.command(cls=_ReplayCommand)
@click.argument("config", type=GivenPath(dir_okay=False, path_type=Path))
@click.argument("traces", nargs=-1, required=True, type=GivenPath(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=GivenPath(file_okay=False, path_type=Path, created=True),
              help="Output directory for the action, conversion and dead-letter files.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), default=None,
              help="Output format (default: the configuration's [output] format, csv).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--overwrite", is_flag=True,
              help="Replace the output of an earlier run in OUT (refused without it: its actions would go out twice).")
@click.option("--workers", type=WholeNumber(1, 256), default=1, show_default=True,
              help="Processes to split the subscribers over, at most one per core (more draw a warning, except "
                   "with --ray); the files are the same as with 1 (on 16 cores, 8 gave the best time: "
                   "docs/performance.md).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run the --workers as Ray actors on the cluster at ADDRESS (alone: RAY_ADDRESS, or a local "
                   "cluster for this run); needs the [ray] extra, and the inputs at the same path on every host.")
@_one_line_errors
def replay(config: Path, traces: tuple[Path, ...], out: Path, fmt, progress, overwrite: bool, workers: int,
           ray_address: Optional[str]):
    """Replay TRACES (one stream, in order) through CONFIG's campaigns, then drain."""
    if ray_address is not None and workers < 2:
        raise click.UsageError("--ray needs --workers 2 or more (the shards it runs)")
    spared = _arrow_without_pandas()
    try:
        with _sigterm_as_ctrl_c():
            _replay(config, traces, out, fmt, progress, overwrite, workers, ray_address)
    finally:
        if spared:
            _arrow_with_pandas()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command runs (_sigterm_as_ctrl_c)."""


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """SIGTERM (`timeout`, `kill`, a CI runner, a supervisor) ends what runs inside as Ctrl-C
    does, where its default ended the process at once with nothing said: the files of every
    action made so far are completed, workers are stopped, and the command says `stopped by
    SIGTERM` in one line, exit 1. Only in the main thread (a program calling the command from
    another keeps its own); the handler before is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(number, frame):
        # once: a second SIGTERM or a Ctrl-C while the run completes its files and stops its
        # workers would break off that clean-up, and end the process by the signal or with a
        # traceback from wherever it landed
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Terminated()

    previous_int = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _replay(config: Path, traces: tuple[Path, ...], out: Path, fmt, progress, overwrite: bool, workers: int = 1,
            ray_address: Optional[str] = None):
    from engine.language.config import load_config
    from engine.sinks import SERVICE_ID_FILE, earlier_run_files
    _check_out(out)
    if os.path.isdir(out / SERVICE_ID_FILE) and not os.path.islink(out / SERVICE_ID_FILE):
        # before anything is removed: --overwrite takes a service's id away with its output
        _fail(f"{out}: {SERVICE_ID_FILE} is a directory, where a service keeps its id: remove it")
    # a service or replay writing it is named first; nothing is created
    held = _hold_out(out) if out.is_dir() else None
    earlier = earlier_run_files(out)
    if earlier and not overwrite and all(p.name.endswith(".tmp") for p in earlier) \
            and not os.path.lexists(out / SERVICE_ID_FILE) and held is not None:
        # a replay killed part-way (SIGKILL, a power cut) left only unfinished files: none
        # reached the gateway, which takes finished names alone, so this run replaces them.
        # Only with the output lock held, so that no other replay is writing them now (a file
        # system without locks gives none), and never a service's (its id is there: its
        # temporary files may be its checkpoint's to finish).
        log.warning(f"{out}: {plural(len(earlier), 'unfinished file')} of a run cut short "
                    f"({earlier[0].relative_to(out)}{' ...' if len(earlier) > 1 else ''}): replaced by this run")
    elif earlier and not overwrite:
        # a finished file for the example: it is what the gateway may have taken
        shown = next((p for p in earlier if not p.name.endswith(".tmp")), earlier[0])
        more = f" and {len(earlier) - 1:,} more" if len(earlier) > 1 else ""
        _fail(f"{out}: already holds a run's output ({shown.relative_to(out)}{more}); "
              "a second run would number its actions from 1 again and the gateway would send them twice: "
              "give a new --out, or --overwrite to replace the earlier run")
    cfg = load_config(config)
    if ray_address is None and workers > 1:
        # a Ray cluster's cores are not this host's: its workers are placed by Ray. Said once
        # the configuration loads: a command that fails says its error alone. One process
        # is never beyond the cores, and need not import multiprocessing to know it.
        from engine.workers import beyond_cores
        too_many = beyond_cores(workers)
        if too_many:
            log.warning("%s", too_many)
    from engine.sinks import unwritable_output_directory
    unwritable = unwritable_output_directory(out, cfg.campaigns)
    if unwritable:
        # before the earlier run is removed and before any event: nothing is written
        _fail(f"--out {out}: {unwritable}")
    # the funnel's uplifts need statsmodels: its import is taken off the end of the run, from
    # the configuration as loaded (read once: CONFIG may be a pipe)
    with intervals_ahead(any(c.holdout for c in cfg.campaigns)):
        if workers > 1:
            _replay_sharded(cfg, config, traces, out, fmt, progress, earlier, workers, ray_address)
        else:
            _replay_one(cfg, traces, out, fmt, progress, earlier)
    click.echo(f"output: {out}")


def _hold_out(out: Path) -> Optional[int]:
    """Hold `out`'s output lock (engine.sinks.lock_output, which keeps it once for the
    process) until the process ends: a service or another replay writing it meanwhile would
    number files alike. Its descriptor; None where the file system takes no locks."""
    from engine.sinks import lock_output
    return lock_output(out)


def _hold_out_as_it_was(out: Path, earlier: list) -> None:
    """Hold `out`'s output lock, and fail when another run's files came there since `earlier`
    was read: an --out made only now was looked at before any lock was held (one must not
    be made for a command that fails), and a run that wrote it meanwhile had its files
    replaced by this one's under the same names (helper-127)."""
    from engine.sinks import earlier_run_files
    _hold_out(out)
    came = sorted(set(earlier_run_files(out)) - set(earlier))
    if came:
        _fail(f"{out}: another run wrote its output there meanwhile ({came[0].relative_to(out)}); a second run "
              "would number its actions from 1 again and the gateway would send them twice: give a new --out")


@contextlib.contextmanager
def _warned_before_a_broken_stream():
    """A stream that breaks ends the command with its error line; a bad value holding many
    events (a damaged header) often comes before such a break, so its warning is said first."""
    try:
        yield
    except (StreamError, LoadError) as e:
        # a trace that could not be read on (a .gz cut short) carries its stats too
        stats = getattr(e, "stats", None)
        if stats is not None:
            # its `bytes` are those before the break, as its good events' are
            _warn_of_hidden_events(stats["run"])
        raise


def _replay_one(cfg, traces: tuple[Path, ...], out: Path, fmt, progress, earlier):
    """`replay` in this process, of the configuration `cfg`."""
    from engine.api import Engine
    from engine.sinks import remove_earlier_run
    engine = Engine(cfg)
    # before anything is processed or removed: a trace that is not an event stream is refused
    # here, so no output exists and no good event has been spent
    judgement = _judged(traces, engine)
    if judgement.refusal:
        raise LoadError(judgement.refusal)
    _hold_out_as_it_was(out, earlier)
    remove_earlier_run(out, earlier)
    with _warned_before_a_broken_stream():
        run = engine.replay(list(traces), out=out, drain=True, format=fmt, progress=progress, keep=False)
    click.echo(format_run(run.stats))
    click.echo(format_funnel(run.stats))
    _warn_of_run(run.stats, cfg)


# A share of late events at which replay warns: real probes deliver some events a little out
# of order, but a share this large is traces out of order, or one event's time far ahead (a
# corrupt ts) that moved the clock on for those after it
LATE_WARNING_SHARE = 0.01


def events_in_largest_bad_value(run: dict) -> int:
    """About how many events the bytes of a run's largest bad value (stats.json's `run` block,
    `largest_bad_value`) would make at the run's average size of a good event; 0 unless that
    is at least engine.records.HIDDEN_EVENTS_FACTOR, or when no good event gives a size
    (engine.records.events_in_bad_value, which `check` asks too). A bad value is mostly one
    event with a wrong field; one of many events' bytes tells of a damaged header that made
    one value of the events after it (docs/semantics.md)."""
    from engine.records import events_in_bad_value     # here: engine.records brings numpy
    largest = run.get("largest_bad_value")
    if not largest:
        return 0
    # `events` counts the good ones
    return events_in_bad_value(largest["bytes"], run["events"], run["bytes"] - run["bad_bytes"])


def _warn_of_hidden_events(run: dict) -> None:
    """Warn when the run's largest bad value holds many events' bytes
    (events_in_largest_bad_value), naming where it lies."""
    hidden = events_in_largest_bad_value(run)
    if not hidden:
        return
    bad, largest = sum(run["bad_events"].values()), run["largest_bad_value"]
    trace = largest.get("trace")
    # a .gz trace's offsets are those of its decompressed bytes, as a broken stream's are
    unpacked = "decompressed " if str(trace).endswith(".gz") else ""
    where = (f"stream byte {largest['offset']:,}" if trace is None
             else f"{unpacked}byte {largest['trace_offset']:,} of {trace}")
    log.warning("%s, at %s, holds %s, as many as about %s of this run (%.0f bytes each on average): a damaged "
                "byte read as the header of a map, an array, a string or binary data makes one bad value of "
                "what follows it. Compare the trace with its source (docs/semantics.md, \"Good and bad events\")",
                "the bad value" if bad == 1 else f"the largest of {bad:,} bad values", where,
                plural(largest["bytes"], "byte"), plural(hidden, "event"),
                (run["bytes"] - run["bad_bytes"]) / run["events"])


def _warn_of_run(stats: dict, cfg) -> None:
    """Warn when at least LATE_WARNING_SHARE of a replay's events were late (processed at the
    clock's time, not their own: SPEC §3, docs/semantics.md), when a bad value holds the
    bytes of many events (events_in_largest_bad_value), and when no good event's
    subscriber was in the profile snapshot (an empty snapshot, or one of another network)."""
    run = stats["run"]
    late, events = run.get("late_events", 0), run["events"]
    good = events                       # `events` counts the good ones only
    if good and run["unknown_subscribers"] == good:
        log.warning("no event's subscriber is in the profile snapshot (%s): the %s are all of unknown "
                    "subscribers, so no campaign could match; are the profiles those of this trace's network?",
                    cfg.profiles if cfg.profiles is not None else "none", plural(good, "good event"))
    _warn_of_hidden_events(run)
    if late and late >= LATE_WARNING_SHARE * events:
        log.warning("%s of %s late (%.0f%%; ts below the engine's clock, processed at the clock's time): traces "
                    "out of order, or an event dated far ahead moved the clock on? Contacts are not what they "
                    "would have been at the events' times (docs/semantics.md)",
                    f"{late:,}", plural(events, "event"), 100 * late / events)


def _check_out(out: Path) -> None:
    """Refuse, before anything is loaded, an --out that cannot become a directory of the
    user's (a file in its path, a directory not writable): the sinks would fail only at
    their first file, after the load, and in an OSError's words."""
    from engine.sinks import dangling_on_the_way
    if dangling := dangling_on_the_way(out):
        _fail(f"--out {dangling}" if dangling.startswith(f"{out} ") else f"--out {out}: {dangling}")
    probe = out
    try:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
    except OSError as e:
        _fail(f"--out {out}: {describe_os_error(e)}")     # a name too long, say
    if not probe.is_dir():
        _fail(f"--out {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        from engine.sinks import not_writable
        _fail(f"--out {out}: {probe} {not_writable(probe)}")
    if probe != out:
        # access() says yes to root everywhere, and /proc or /sys refuse a directory all the
        # same: made and removed now, the first missing one says so before the load
        first = out
        while first.parent != probe:
            first = first.parent
        try:
            os.mkdir(first, 0o700)
        except FileExistsError:
            # made meanwhile by another run (two replays into sibling folders of one new
            # parent): a directory, as this one needs
            if not first.is_dir():
                _fail(f"--out {out}: {first} is not a directory")
        except OSError as e:
            _fail(f"--out {out}: {e.strerror}" if first == out else f"--out {out}: {describe_os_error(e)}")
        else:
            try:
                os.rmdir(first)
            except OSError:
                pass        # another run's files are there now, or it removed it: made again later
    # a service's spool would take the files written there for input (and move them to
    # rejected/; its done/ is pruned), and a state directory is the service's own
    from engine.service.checkpoint import service_directory_problem
    problem = service_directory_problem(out, exists=probe == out)
    if problem:
        _fail(f"--out {out}: {problem}: give another --out")


def _replay_sharded(cfg, config: Path, traces: tuple[Path, ...], out: Path, fmt, progress, earlier, workers: int,
                    ray_address: Optional[str] = None):
    """`replay --workers N` (engine.workers), on Ray with `ray_address` (engine.workers.cluster;
    "": RAY_ADDRESS or a local cluster) of the configuration `cfg` loaded from `config`: the
    traces are judged here, as for one process, and the earlier output removed before any
    worker starts (on Ray, once the cluster is reached)."""
    from engine import workers as sharded
    from engine._core import Core
    from engine.sinks import remove_earlier_run
    judge = Core()
    judge.set_event_types(dict(cfg.event_types))
    judgement = _judged(traces, judge)
    if judgement.refusal:
        raise LoadError(judgement.refusal)

    def remove_earlier():
        _hold_out_as_it_was(out, earlier)
        remove_earlier_run(out, earlier)

    if ray_address is not None:
        from engine.language.config import read_once
        if read_once(config):
            # every actor reads CONFIG itself, on its own host: a pipe is read once, here
            raise LoadError(f"{config}: --ray needs CONFIG as a file that every host reads at the same path "
                            "(this is a pipe or a device)")
        from engine.workers import cluster
        # only once the cluster is reached and the workers placed: a cluster that cannot be
        # reached leaves the earlier run's output as it was
        with _warned_before_a_broken_stream():
            stats = cluster.replay(config, list(traces), out, workers=workers, address=ray_address or None,
                                   format=fmt, progress=progress, ready=remove_earlier)
    else:
        # once the world has loaded, as for one process: a snapshot or list that does not load
        # leaves no output folder behind
        with _warned_before_a_broken_stream():
            stats = sharded.replay(cfg, list(traces), out, workers=workers, format=fmt, progress=progress,
                                   ready=remove_earlier)
    click.echo(format_run(stats))
    click.echo(format_funnel(stats))
    _warn_of_run(stats, cfg)


class _NoPandas:
    """A finder that makes `import pandas` fail (while _arrow_without_pandas converts)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not needed here", name=name)
        return None


def _arrow_without_pandas() -> bool:
    """Spare `replay` the import of pandas (0.3-0.5 s of a 2-3 s start here; statsmodels
    installs it). pyarrow imports pandas on its first conversion of anything, only to ask
    whether the object is a pandas one; replay converts NumPy arrays and lists. pyarrow
    remembers an import that failed, so one conversion made while it fails is enough; a
    later to_pandas() or from_pandas() imports pandas as usual. Returns whether pyarrow now
    believes there is no pandas (_arrow_with_pandas undoes it)."""
    if "pandas" in sys.modules:
        return False
    import pyarrow as pa
    sys.meta_path.insert(0, _NoPandas)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_NoPandas)
    return True


def _arrow_with_pandas() -> None:
    """Make pyarrow try pandas again at its next conversion, after `replay`: a caller that
    runs the command in its own process would otherwise find pa.array(series) blind to
    pandas (a categorical Series typed string, not dictionary). pyarrow keeps what it
    learnt in its private _pandas_api, whose __init__ forgets it; a pyarrow without it
    is left as it is."""
    import pyarrow.lib
    shim = getattr(pyarrow.lib, "_pandas_api", None)
    if shim is not None:
        try:
            shim.__init__()
        except (TypeError, AttributeError):     # a shim that changed: left as replay left it
            pass


def _judged(traces, engine):
    """Judge TRACES as one stream (loaders.sniff) and log its warnings; the caller refuses."""
    from loaders.sniff import judge_traces
    judgement = judge_traces(traces, engine)
    for line in judgement.warnings:
        logging.getLogger("sigmatch.traces").warning(line)
    return judgement


# `sigmatch explain` exits with this when the number asked about is not an active subscriber
EXIT_NOT_A_SUBSCRIBER = 3


@main.command()
@click.argument("config", type=GivenPath(dir_okay=False, path_type=Path))
@click.argument("traces", nargs=-1, required=True, type=GivenPath(dir_okay=False, path_type=Path))
@click.option("--msisdn", required=True, multiple=True, metavar="N", help="The subscriber to explain (digits).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document: events[] {ts, type, campaigns: [{id, result}], ...} and actions[] "
                   "(docs/semantics.md, 'Explanations').")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@_one_line_errors
def explain(config: Path, traces: tuple[Path, ...], msisdn: tuple[str, ...], as_json: bool, progress):
    """Why subscriber N did or did not get each campaign: replay TRACES through CONFIG (then
    drain, as replay does) and list each of N's events and timers, every campaign of the
    event's type with "matched" or the first condition that failed, what became of each
    emission (the contact's seq, or the rule that suppressed it), conversions and N's state
    after it. Writes no output files. Exit 3 when N is not a subscriber of CONFIG's profiles."""
    import json
    from engine.api import Engine
    from engine.closedloop.explain import format_text
    from loaders.lists import MSISDN_RULE, NOT_FOUND_HINT, normalise_msisdn
    if len(msisdn) > 1:
        # click keeps the last of a repeated option: the first subscriber asked about was
        # silently not the one explained
        _fail(f"--msisdn: given {len(msisdn)} times; explain takes one subscriber a run")
    msisdn = msisdn[0]
    # the rule of profiles, lists and the lookup's paths: as a customer gives it, or one line
    number = normalise_msisdn(msisdn)
    if number is None:
        # masked as lists and the lookup mask what they refuse when it may be a number all the
        # same (seven digits or more, however spelt); shown as typed when it cannot ('abc' read 'a*c')
        from engine.privacy import mask_msisdn
        typed = msisdn.strip()
        shown = mask_msisdn(typed) if sum(c.isdigit() for c in typed) >= 7 else typed
        _fail(f"--msisdn: {shown!r} is not an MSISDN ({MSISDN_RULE})")
    engine = Engine.from_config(config)
    status = engine.subscriber_status(number)
    if status != "active":
        # standard error is masked (engine.privacy), this number too; stdout would show it whole
        click.echo(f"sigmatch: {number} is not a subscriber of {config}'s profiles ({NOT_FOUND_HINT})"
                   if status == "unknown" else f"sigmatch: {number} is an inactive subscriber", err=True)
        sys.exit(EXIT_NOT_A_SUBSCRIBER)
    judgement = _judged(traces, engine)
    if judgement.refusal:
        raise LoadError(judgement.refusal)
    engine.watch([number])
    try:
        engine.replay(list(traces), drain=True, progress=progress, keep=False)
    except (StreamError, LoadError):
        # what the events before the break explain is said, then the break (one line, exit
        # 1), as replay keeps the actions before it: nothing was said (helper-126)
        _say_explanation(engine, number, as_json)
        raise
    _say_explanation(engine, number, as_json)


def _say_explanation(engine, number: int, as_json: bool) -> None:
    import json
    from engine.closedloop.explain import format_text
    doc = engine.explanation(number)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(format_text(doc, engine.config.utc_offset_ms))


@main.command()
@click.argument("outputs", nargs=-1, required=True, type=GivenPath(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="The report as one JSON document on standard output (docs/semantics.md, 'Reports').")
@click.option("--html", "html_path", type=GivenPath(dir_okay=False, path_type=Path, created=True), default=None,
              help="Also write one self-contained HTML page (plots embedded) here.")
@click.option("--plots", "plots_dir", type=GivenPath(file_okay=False, path_type=Path, created=True), default=None,
              help="Also write funnel.png, uplift.png and daily.png into this directory.")
@click.option("--by", type=click.Choice(["campaign", "variant", "day"]), default="campaign", show_default=True,
              help="Rows of the table: per campaign (with the funnel), per campaign and template, per local day.")
@click.option("--min-controls", type=WholeNumber(min=1), default=MIN_CONTROLS, show_default=True,
              help="Controls below which an uplift is 'too few controls' rather than a figure.")
@click.option("--non-responders", "non_responders", type=WholeNumber(min=1), default=None, metavar="K",
              help="Write the subscribers with at least K sends and no conversion to --list.")
@click.option("--since", default=None, metavar="DURATION",
              help="With --non-responders: only the period this long (30d, 12h) before the last action time.")
@click.option("--campaign", default=None, metavar="ID",
              help="With --non-responders: sends and conversions of this campaign only (default: every campaign).")
@click.option("--list", "list_path", type=GivenPath(dir_okay=False, path_type=Path, created=True), default=None,
              metavar="FILE.roar|.txt|.csv", help="With --non-responders: where the list goes (0640): .roar a 64-bit "
                                                   "Roaring bitmap, .txt one MSISDN a line, .csv a column msisdn.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@_one_line_errors
def report(outputs: tuple[Path, ...], as_json: bool, html_path, plots_dir, by: str, min_controls: int,
           non_responders, since, campaign, list_path, progress):
    """What each campaign earned: funnel, contacts, conversions and uplift over its controls
    (95% interval), the programme's lift over the global controls, day by day, from the output
    directories OUTPUTS of one configuration. With --non-responders K --list FILE.roar: the
    subscribers who got K sends and never converted, as an exclude list."""
    import json as json_module
    from engine.closedloop.outputs import read_outputs
    from engine.closedloop.report import build_report, format_report
    if plots_dir is not None or html_path is not None:
        from engine.closedloop.render import require_extras
        require_extras("report", plots=plots_dir is not None, html=html_path is not None)
    for option, written in (("--html", html_path), ("--list", list_path), ("--plots", plots_dir)):
        if written is not None:
            _refuse_over_inputs(option, written, read_dirs=outputs)
    if html_path is not None:
        _refuse_unwritable("--html", html_path, "the page")
    since_ms = None
    if non_responders is None:
        for name, value in (("--since", since), ("--campaign", campaign), ("--list", list_path)):
            if value is not None:
                _fail(f"{name} applies to --non-responders K")
    else:
        if list_path is None:
            _fail("--non-responders needs --list FILE.roar (where the list goes)")
        from engine.closedloop.nonresponders import LIST_SUFFIXES
        if list_path.suffix.lower() not in LIST_SUFFIXES:
            _fail(f"--list {list_path}: name it FILE.roar (a Roaring bitmap), FILE.txt (one MSISDN a line) or "
                  "FILE.csv (a column msisdn): its suffix picks the format, as when a configuration reads the list")
        _refuse_unwritable("--list", list_path, "the list")
        if since is not None:
            from engine.language.config import parse_duration
            try:
                since_ms = parse_duration(since)
            except ValueError as e:
                _fail(f"--since {since}: {e}")
    # statsmodels (with scipy and pandas) takes seconds to import: a child process imports it
    # while the files are read, and is gone when the block ends. (A daemon thread here was
    # still importing when a refused directory ended the process.)
    with intervals_ahead():
        read = read_outputs(outputs, progress=progress)
        document = build_report(read, min_controls=min_controls)
    if non_responders is not None:
        from engine.closedloop.nonresponders import non_responders as find, write_list
        found = find(read, non_responders, since_ms=since_ms, campaign=campaign)
        try:
            write_list(list_path, found.msisdns)
        except OSError as e:        # named by the option, not by the temporary file it writes first
            _fail(f"--list {list_path}: cannot write the list ({e.strerror or e})")
        scope = f"of campaign {campaign}" if campaign else "of any campaign"
        period = "" if found.since_ts is None else f" since {_utc(found.since_ts)}"
        line = (f"{list_path}: {plural(len(found.msisdns), 'subscriber')} with at least "
                f"{plural(non_responders, 'send')} {scope}{period} and no conversion "
                f"(of {plural(found.receivers, 'subscriber')} sent to)")
        click.echo(line, err=as_json)
    if plots_dir is not None:
        from engine.closedloop.render import write_plots
        try:
            written = write_plots(document, plots_dir)
        except OSError as e:
            _fail(f"--plots {plots_dir}: cannot write the plots ({e.strerror or e})")
        click.echo(f"plots: {', '.join(str(p) for p in written)}", err=as_json)
    if html_path is not None:
        from engine.closedloop.render import write_html
        try:
            written_html = write_html(document, html_path)
        except OSError as e:
            _fail(f"--html {html_path}: cannot write the page ({e.strerror or e})")
        click.echo(f"html: {written_html}", err=as_json)
    if as_json:
        click.echo(json_module.dumps(document, indent=2, ensure_ascii=False))
    elif non_responders is None:
        click.echo(format_report(document, by=by))


def _refuse_over_inputs(option: str, path: Path, *, read_dirs=(), read_files=()) -> None:
    """Fail in one line when what `option` writes at `path` would land on what the command
    reads: in (or as) one of `read_dirs` (a report's output directories: a gateway would take
    the page or the list for one of the run's files, and the next report would read it), or on
    one of `read_files` (helper-133: `report out --html out/stats.json`, `diff ... --html
    trace.msgpack` replaced them, exit 0). A page (`--html`) must also be named .html or .htm,
    so that it replaces no configuration, trace or profile by a slip of the name."""
    if option == "--html" and path.suffix.lower() not in (".html", ".htm"):
        _fail(f"{option} {path}: name it FILE.html (a page named otherwise could replace a configuration, a trace "
              "or a profile by a slip of the name)")
    # by name and by what the names lead to (a link on the way)
    wheres = {Path(os.path.abspath(path)), Path(os.path.realpath(path))}
    for directory in read_dirs:
        inside = {Path(os.path.abspath(directory)), Path(os.path.realpath(directory))}
        if any(d == w or d in w.parents for d in inside for w in wheres):
            _fail(f"{option} {path}: inside {directory}, an output directory this command reads: a gateway "
                  "would take it for one of the run's files; write it elsewhere")
    for read in read_files:
        if wheres & {Path(os.path.abspath(read)), Path(os.path.realpath(read))}:
            _fail(f"{option} {path}: is {read}, which this command reads: write it elsewhere")


def _refuse_unwritable(option: str, path, what: str) -> None:
    """Fail in one line, before the command's work, when `what` cannot be written at `path`
    (helper-128: diff replayed both configurations, seconds, and then refused its --html)."""
    from engine.sinks import unwritable_output_file
    problem = unwritable_output_file(path)
    if problem:
        _fail(f"{option} {path}: cannot write {what} ({problem})")


@main.command()
@click.argument("config_a", type=GivenPath(dir_okay=False, path_type=Path))
@click.argument("config_b", type=GivenPath(dir_okay=False, path_type=Path))
@click.argument("traces", nargs=-1, required=True, type=GivenPath(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="The comparison as one JSON document on standard output (docs/semantics.md, 'What-if').")
@click.option("--html", "html_path", type=GivenPath(dir_okay=False, path_type=Path, created=True), default=None,
              help="Also write one self-contained HTML page (plots embedded) here.")
@click.option("--state", type=GivenPath(path_type=Path), default=None, metavar="CHECKPOINT",
              help="Start both from this state: a checkpoint file (Engine.checkpoint) or the --state directory "
                   "of `sigmatch run` (default: an empty state).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@_one_line_errors
def diff(config_a: Path, config_b: Path, traces: tuple[Path, ...], as_json: bool, html_path, state, progress):
    """What CONFIG_B would do differently from CONFIG_A on the same TRACES: both replayed as
    `replay` does (in two processes at once, from the same state), then compared per
    campaign, channel and local day: contacts in A and in B, gained (in B only) and lost (in A
    only), a contact being its campaign, subscriber and trigger time; and the time each budget
    was reached. To see what a new campaign adds, make CONFIG_B a copy of CONFIG_A with it."""
    import json as json_module
    from engine.closedloop.diff import build_diff, format_diff, replay_both
    if html_path is not None:
        from engine.closedloop.render import require_extras
        require_extras("diff", html=True)
        _refuse_over_inputs("--html", html_path, read_files=(config_a, config_b, *traces, *([state] if state else [])),
                            read_dirs=[state] if state is not None and state.is_dir() else [])
        _refuse_unwritable("--html", html_path, "the page")
    a, b = replay_both(config_a, config_b, traces, state=state, progress=progress, json_logs=_json_errors)
    document = build_diff(a, b, traces=traces, state=state)
    for line in document["warnings"]:
        log.warning("%s", line)
    if html_path is not None:
        from engine.closedloop.render import write_diff_html
        try:
            written = write_diff_html(document, html_path)
        except OSError as e:
            _fail(f"--html {html_path}: cannot write the page ({e.strerror or e})")
        click.echo(f"html: {written}", err=as_json)
    if as_json:
        click.echo(json_module.dumps(document, indent=2, ensure_ascii=False))
    else:
        click.echo(format_diff(document))


def _life(c) -> str:
    """What check says of a campaign's enabled, start and end: a marketer who checks a
    campaign that is off, or whose dates are past, is told so beside its audience."""
    if not c.enabled:
        return "; disabled (enabled = false): it matches nothing"
    if c.start is not None and c.end is not None:
        return f"; acts on local dates {c.start.isoformat()} to {c.end.isoformat()}"
    if c.start is not None:
        return f"; acts from local date {c.start.isoformat()}"
    if c.end is not None:
        return f"; acts until local date {c.end.isoformat()}"
    return ""


def _span(ms: int) -> str:
    """A duration of the configuration as it would be written: 7d, 12h, 90m, 30s."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def _policy_lines(cfg) -> list[str]:
    """check's lines for the second edition's programme-wide limits: the rolling window, the
    global control group and the channels' daily budgets (nothing when none is set)."""
    lines = []
    if cfg.policy.max_in_window is not None:
        contacts, window = cfg.policy.max_in_window
        lines.append(f"max_in_window: at most {plural(contacts, 'contact')} in any {_span(window)} "
                     "(all campaigns together)")
    if cfg.policy.global_holdout:
        lines.append(f"global_holdout: {cfg.policy.global_holdout:.2%} of subscribers are never sent anything")
    for channel, budget in cfg.channel_budgets.items():
        lines.append(f"channel {channel}: daily_budget {budget:,} sends a local day")
    return lines


def _variants(c) -> str:
    """check's line for a campaign's variants: each template with its weight and its share of
    the subscribers (weight / W), as a marketer plans an A/B test."""
    total = sum(v.weight for v in c.variants)
    # a template may hold a tab or a line break (quoted in the files): shown as escapes, one
    # line, its own backslashes doubled so that a tab and a written `\t` read apart
    return ", ".join(f"{escape_controls(v.template.replace(chr(92), chr(92) * 2))} {v.weight:,} "
                     f"({100 * v.weight / total:.4g}%)" for v in c.variants)


def _utc(ms: int) -> str:
    from engine.wording import local_time
    return local_time(ms) + " UTC"


@main.command()
@click.argument("config", type=GivenPath(dir_okay=False, path_type=Path))
@click.argument("traces", nargs=-1, type=GivenPath(dir_okay=False, path_type=Path))
@_one_line_errors
def check(config: Path, traces: tuple[Path, ...]):
    """Validate CONFIG and everything it names (profiles, lists, areas, where); with TRACES,
    also what the head of each holds (its first 4,096 values), refusing them as replay would."""
    from engine.api import Engine
    from engine.language.config import load_config
    cfg = load_config(config)
    engine = Engine(cfg)
    world = engine.world
    click.echo(f"{config}: ok")
    click.echo(f"  subscribers: {len(world.profiles.msisdn):,} ({plural(world.profiles.bad_rows, 'bad row')} skipped)")
    for name, members in world.lists.items():
        click.echo(f"  list {name}: {plural(len(members), 'number')}")
    for name, cells in world.areas.items():
        click.echo(f"  area {name}: {plural(len(cells), 'cell')}")
    click.echo(f"  counters: {', '.join(c.name for c in cfg.counters) or '-'}")
    click.echo(f"  markers: {', '.join(m.name for m in cfg.markers) or '-'}")
    for line in _policy_lines(cfg):
        click.echo(f"  {line}")
    click.echo("  campaigns (priority order), with the subscribers their audience, lists and where let through:")
    never = []
    for c in cfg.campaigns:
        count = engine.eligible.get(c.id, 0)
        click.echo(f"    {c.id}: {plural(count, 'subscriber')} eligible{_life(c)}")
        if c.variants:
            click.echo(f"      variants (template, weight, share): {_variants(c)}")
        if c.when is not None:
            click.echo(f"      when: {' '.join(c.when.split())}")
        budgets = [f"{n:,} {what}" for n, what in ((c.daily_budget, "sends a local day"),
                                                   (c.total_budget, "sends in all")) if n is not None]
        if budgets:
            click.echo(f"      budget: {', '.join(budgets)}")
        if count == 0:
            never.append(c.id)
    if not cfg.campaigns:
        click.echo("    -")
    for name, count in engine.malformed_dates.items():
        click.echo(f"  {name}: {plural(count, 'value is not a date', 'values are not dates')} (YYYY-MM-DD); "
                   "those subscribers never match an anniversary")
    click.echo(f"  engine state: {engine.bytes_per_subscriber:.0f} bytes per subscriber")
    warn = logging.getLogger("sigmatch.check").warning
    if len(world.profiles.msisdn) == 0:
        # one line for the cause (the loader's, which every command says), rather than one
        # per campaign for its effect
        never = []
    for cid in never:
        warn("campaign %r can never match: no subscriber passes its audience, exclude lists, blacklist and where", cid)
    for c in cfg.campaigns:
        # what an event must meet, named by a list or an area that holds nothing
        if c.peer_in is not None and len(world.lists[c.peer_in]) == 0:
            warn("campaign %r can never match: its peer_in list %r is empty", c.id, c.peer_in)
        if c.area is not None and len(world.areas[c.area]) == 0:
            warn("campaign %r can never match: its area %r is empty", c.id, c.area)
    if traces:
        from loaders.sniff import HEAD_VALUES
        click.echo(f"  traces, one stream in this order (the head of each: at most its first {HEAD_VALUES:,} values):")
        try:
            judgement = _judged(traces, engine)
        except LoadError:
            # a trace that cannot be read at all: the verdict on stdout, the reason on stderr
            click.echo("  traces: refused (the error follows)")
            raise
        for head in judgement.heads:
            click.echo(f"    {head.name}: {head.describe()}")
        # the verdict on stdout too: its first line said the configuration was ok
        trouble = judgement.refusal or judgement.broken
        click.echo("  traces: " + ("refused (the error follows)" if judgement.refusal else
                                   "broken (the error follows)" if judgement.broken else
                                   f"ok as far as check can tell: {judgement.unsure}" if judgement.unsure else "ok"))
        if trouble:
            raise LoadError(trouble)


@main.command()
@click.option("--dir", "directory", type=GivenPath(file_okay=False, path_type=Path, created=True), default=None,
              help="Where to build the demo world, or to reuse the one built there before while its files are "
                   "as they were made (default: a new temporary directory).")
@click.option("--subscribers", default=100_000, show_default=True)
@click.option("--events", default=2_000_000, show_default=True)
@_one_line_errors
def demo(directory, subscribers: int, events: int):
    """Build a small world, replay it, print the funnel and where the files are."""
    from engine.api import Engine
    from engine.world.demo import check_demo_size, demo_world
    try:
        check_demo_size(subscribers, events)        # before a directory is made
    except ValueError as e:
        _fail(str(e))
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="sigmatch-demo-"))
    from engine.world.demo import DEMO_MARK
    if directory.is_dir() and any(directory.iterdir()) and not (directory / DEMO_MARK).is_file():
        # the demo writes its own campaigns.toml, profiles, lists and traces over any there
        _fail(f"--dir {directory}: not empty and not a demo's directory (no {DEMO_MARK}): the demo would write "
              "over its files: give an empty or new --dir")
    from engine.sinks import make_private_directories, write_private
    make_private_directories(directory)
    write_private(directory / f"{DEMO_MARK}.tmp", directory / DEMO_MARK,
                  b"a directory of `sigmatch demo`: a demo run here writes over its files\n")
    out = directory / "out"
    _hold_out(out)      # as replay holds it: a service or replay writing there is named
    from engine.sinks import SERVICE_ID_FILE, earlier_run_files, remove_earlier_run
    earlier = earlier_run_files(out)
    if earlier:
        # a second demo in one --dir replaces the first one's output, as replay --overwrite
        # does: its files numbered beside the first run's would double every count
        if os.path.lexists(out / SERVICE_ID_FILE):
            _fail(f"{out}: holds a service's output ({SERVICE_ID_FILE}): give the demo another --dir")
        remove_earlier_run(out, earlier)
        click.echo(f"the earlier output in {out} replaced ({plural(len(earlier), 'file')})")
    # the demo's programmes hold out controls: statsmodels, for their uplifts, is imported
    # while the world is built and replayed
    with intervals_ahead():
        world = demo_world(directory, subscribers=subscribers, events=events)
        config_path = world.config
        click.echo(f"demo world: {subscribers:,} subscribers, {events:,} events in {directory} ({world.why})")
        engine = Engine.from_config(config_path)
        run = engine.replay(world.traces, out=out, drain=True, keep=False)
        click.echo(format_run(run.stats))
        click.echo(format_funnel(run.stats, legend=True))
    click.echo(f"configuration: {config_path}")
    click.echo(f"output:        {out}")
    for sub in sorted(p for p in out.iterdir() if p.is_dir()):
        files = sorted(sub.iterdir())
        click.echo(f"  {sub.name}/: {len(files)} file(s)")


@main.command()
@click.argument("directory", type=GivenPath(file_okay=False, path_type=Path, created=True))
@click.option("--subscribers", type=Integer(), required=True,
              help="Subscribers in the profile snapshot (100 to 500,000,000).")
@click.option("--events", type=Integer(), required=True, help="Events in the trace.")
@click.option("--campaigns", type=Integer(), default=13, show_default=True,
              help="Synthetic campaigns, written after the programmes of examples/, which gen always writes "
                   "(13: one of each kind).")
@click.option("--days", type=Integer(), default=2, show_default=True, help="Local days the trace spans.")
@click.option("--seed", type=Integer(), default=1, show_default=True, help="Same seed, same bytes.")
@click.option("--trace-files", type=Integer(), default=1, show_default=True,
              help="Files the trace is cut into, at event boundaries.")
@click.option("--profiles-format", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--start", default="2026-11-02", show_default=True, help="First local day of the trace.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--force", is_flag=True,
              help="Write into a DIRECTORY that is not empty: the files gen writes (campaigns.toml, profiles.*, "
                   "trace*.msgpack, its lists/ and areas/ files) are removed first; no other file is touched.")
@_one_line_errors
def gen(directory: Path, subscribers: int, events: int, campaigns: int, days: int, seed: int,
        trace_files: int, profiles_format: str, start: str, progress, force: bool):
    """Write a synthetic world into DIRECTORY: profiles, lists, areas, campaigns and a trace."""
    from engine.world.gen import check_arguments, generate, world_files
    try:
        # before anything is touched: --events 0 (an empty trace replay would refuse), a negative count
        check_arguments(subscribers, events, campaigns, days, seed, trace_files, profiles_format, start,
                        options=True)
    except ValueError as e:
        _fail(str(e))
    if directory.is_dir() and any(directory.iterdir()) and not force:
        _fail(f"{directory}: not empty; gen would replace its campaigns.toml and data: give an empty or new "
              "directory, or --force")
    if force:
        # an earlier world's files that this one would not overwrite (trace-1..3 beside a new
        # trace.msgpack, profiles.parquet beside profiles.csv) must not be left to be read with it
        for path in world_files(directory):
            path.unlink()
    try:
        world = generate(directory, subscribers=subscribers, events=events, campaigns=campaigns, days=days,
                         seed=seed, trace_files=trace_files, profiles_format=profiles_format, start=start,
                         progress=progress)
    except ValueError as e:
        _fail(str(e))
    click.echo(f"world: {directory}")
    click.echo(f"  profiles:  {world.profiles.name} ({world.subscribers:,} subscribers)")
    click.echo(f"  lists:     {', '.join(world.lists)}")
    click.echo(f"  areas:     {', '.join(world.areas)}")
    click.echo(f"  campaigns: {world.config.name} ({world.campaigns} campaigns)")
    click.echo(f"  trace:     {world.events:,} events, {world.trace_bytes / 1e6:,.1f} MB in "
               f"{', '.join(p.name for p in world.traces[:3])}{' ...' if len(world.traces) > 3 else ''}")
    click.echo(f"generated in {world.elapsed_s:.2f} s; the trace at {per_second(world.events_per_s)}")


@main.command()
@click.argument("config", type=GivenPath(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=GivenPath(file_okay=False, path_type=Path, created=True),
              help="Output directory for the sink files.")
@click.option("--state", required=True, type=GivenPath(file_okay=False, path_type=Path, created=True),
              help="Directory of the checkpoints.")
@click.option("--spool", type=GivenPath(file_okay=False, path_type=Path), default=None,
              help="Directory where probes drop *.msgpack files (written under another name, then renamed).")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Accept producers' msgpack streams over TCP (journaled under --state, or into --spool when given); "
                   "a producer that half-closes is answered with its bytes journaled (8 bytes, big-endian; see "
                   "`sigmatch send`); host defaults to 127.0.0.1.")
@click.option("--idle-timeout", type=Seconds(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --listen: close a producer's connection silent this long, answering what was taken "
                   "[default: 300].")
@click.option("--max-connections", type=WholeNumber(min=1), default=None, metavar="N",
              help="With --listen: producers' connections open at once; at the bound the one idle longest is "
                   "closed to make room for a new one [default: 64].")
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read the event stream from standard input (journaled); when it is the only source, exit at its end.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), default=None)
@click.option("--lookup", default=None, metavar="HOST:PORT",
              help="Serve GET /subscriber/{msisdn} (the policy view) here; host defaults to 127.0.0.1.")
@click.option("--lookup-token", envvar="SIGMATCH_LOOKUP_TOKEN", default=None,
              help="Bearer token the lookup requires (or SIGMATCH_LOOKUP_TOKEN).")
@click.option("--metrics", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics here; host defaults to 127.0.0.1.")
@click.option("--checkpoint-every", type=Seconds(min=0), default=10.0, metavar="SECONDS", show_default=True,
              help="Longest time between checkpoints while a backlog is processed (taken at the next input-file "
                   "boundary, or inside a long file); a spool that runs empty is checkpointed at once. "
                   "0: after every input file.")
@click.option("--idle-advance", type=Seconds(min=0, min_open=True), default=None, metavar="SECONDS",
              help="After this long without input, move event time on with the wall clock so delayed "
                   "actions still go out (off by default: the one option that makes output depend on wall time).")
@click.option("--spool-owner", "spool_owners", multiple=True, metavar="USER",
              help="Users (names or uids; repeatable or comma-separated) whose spool files are read; any other "
                   "file, a link or not a regular file, goes unread to SPOOL/rejected/ "
                   "[default: the spool directory's owner; the service's own user always].")
@click.option("--settle", type=Seconds(min=0), default=1.0, show_default=True, metavar="SECONDS",
              help="Read a spool file once its size and modification time have not changed for this long "
                   "(a file written in place is not read half-written); 0: at once.")
@click.option("--keep-done", "keep_done", multiple=True, metavar="DURATION|SIZE",
              help="Delete the oldest files of SPOOL/done/ beyond this age (90m, 12h, 7d) or total size (500MB, "
                   "50GB), only what no checkpoint needs again; repeatable (both limits apply) [default: keep all].")
@click.option("--watch", "watch_path", type=GivenPath(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Explain these subscribers from start-up (one MSISDN a line, or a .csv/.roar list): "
                   "GET /subscriber/{msisdn}/explain on the lookup; PUT/DELETE /watch/{msisdn} changes the list.")
@click.option("--workers", type=WholeNumber(1, 256), default=1, show_default=True,
              help="Split the subscribers over N workers, threads of this process (give at most one per core): the "
                   "same files as one worker, exactly once across crashes. A --state keeps the number it was started "
                   "with until `sigmatch reshard` rewrites it for another.")
@_one_line_errors
def run(config: Path, out: Path, state: Path, spool, listen, idle_timeout, max_connections, from_stdin: bool, fmt,
        lookup, lookup_token, metrics, checkpoint_every, idle_advance, spool_owners, settle, keep_done, watch_path,
        workers: int):
    """Run as a service over a spool directory, TCP producers or standard input (or several
    of them, as one stream), exactly once across crashes; SIGTERM stops."""
    from engine.service.daemon import run_spool
    if spool is None and listen is None and not from_stdin:
        _fail("give a source: --spool DIR, --listen HOST:PORT or --stdin (or several)")
    if from_stdin and sys.stdin is None:
        _fail("--stdin: standard input is closed")
    from engine.service.metrics import parse_hostport
    if lookup and (not (lookup_token or "").strip() or any(c in lookup_token for c in "\r\n\0")):
        _fail("--lookup needs a bearer token: --lookup-token or SIGMATCH_LOOKUP_TOKEN (not an empty one or one "
              "of spaces, and on one line)")
    try:
        listen_at = parse_hostport(listen, option="--listen") if listen is not None else None
        lookup_at = parse_hostport(lookup, option="--lookup") if lookup is not None else None
        metrics_at = parse_hostport(metrics, option="--metrics") if metrics is not None else None
    except ValueError as e:
        _fail(str(e))
    from engine.service.daemon import parse_keep_done, spool_owner_ids
    try:
        owners = spool_owner_ids(spool_owners) or None
        keep = [parse_keep_done(value) for value in keep_done]
    except ValueError as e:
        _fail(str(e))
    from engine.service.sources import IDLE_TIMEOUT_S, MAX_CONNECTIONS, Listen
    if listen_at is None and (idle_timeout is not None or max_connections is not None):
        _fail("--idle-timeout and --max-connections apply to --listen")
    if listen_at is not None:
        listen_at = Listen(*listen_at, idle_timeout_s=IDLE_TIMEOUT_S if idle_timeout is None else idle_timeout,
                           max_connections=MAX_CONNECTIONS if max_connections is None else max_connections)
    sys.exit(run_spool(config, out, state, spool, format=fmt, lookup=lookup_at, lookup_token=lookup_token,
                       metrics=metrics_at, idle_advance_s=idle_advance,
                       stdin=sys.stdin.buffer if from_stdin else None, listen=listen_at,
                       checkpoint_every_s=checkpoint_every, spool_owners=owners, settle_s=settle, keep_done=keep,
                       watch=watch_path, workers=workers))


@main.command()
@click.option("--state", required=True, type=GivenPath(file_okay=False, path_type=Path),
              help="The state directory of a stopped `sigmatch run`.")
@click.option("--workers", type=WholeNumber(1, 256), required=True,
              help="The --workers the service will be started with next (1: without --workers).")
@_one_line_errors
def reshard(state: Path, workers: int):
    """Rewrite a stopped service's state for another number of workers, in place: start it
    next with `sigmatch run --workers N --state STATE`, and it goes on exactly where it
    stopped. Needs memory for about twice the state's size on disk, and the disk space
    of the new state beside the old one until it moves in. Run as root, it gives the new
    files to the state directory's owner."""
    from engine.service.reshard import reshard as rewrite
    summary = rewrite(state, workers)
    finished = summary.get("finished")
    if finished is not None:
        click.echo(f"--state {state}: an interrupted reshard to --workers {finished.get('to')} finished")
    if summary.get("first_cut"):
        click.echo(f"--state {state}: held only a first checkpoint that a crash cut short (no commit complete, "
                   f"as a service finds it when it starts afresh): removed; start the service with the --workers "
                   f"you want")
    elif summary["from"] is None and finished is None:
        click.echo(f"--state {state}: already the state of a service with --workers {workers}: nothing to do")
    elif summary["from"] is not None:
        click.echo(f"--state {state}: rewritten from --workers {summary['from']} to --workers {workers} "
                   f"({plural(summary['subscribers'], 'subscriber')}, {plural(summary['contacts'], 'contact')}, "
                   f"{plural(summary['pending'], 'pending action')}); start it with `sigmatch run "
                   f"{f'--workers {workers} ' if workers > 1 else ''}--state {state} ...`")


@main.command()
@click.argument("address", metavar="HOST:PORT")
@click.argument("files", nargs=-1, required=True,
                type=GivenPath(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--timeout", type=Seconds(min=0, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="Longest wait for the service to read, or to answer.")
@_one_line_errors
def send(address: str, files, timeout: float):
    """Send msgpack event FILES (- for standard input) to `sigmatch run --listen` as one stream
    on one connection, and check the service's answer: exit 0 only when all of it was journaled."""
    from engine.service import client
    from engine.service.metrics import parse_hostport
    try:
        host, port = parse_hostport(address)
    except ValueError as e:
        _fail(str(e))
    if port == 0:
        # a service listens on port 0 to have one chosen; nothing can be reached there
        _fail(f"{address}: port 0 is no port to send to: give the port the service's started line names")
    if sys.stdin is None and any(str(path) == "-" for path in files):
        _fail("-: standard input is closed")
    # a file of another format, checked before anything is sent: the service would journal
    # it and set it aside, and the answer tell only how many bytes it took (helper-119)
    sources = []
    for path in files:
        if str(path) == "-":
            # what has come so far (at least one byte, or the end), judged as a file's head is,
            # then sent ahead of the rest: `cat x.gz | send -` where `zcat` was meant
            head = sys.stdin.buffer.read1(64 << 10)
            problem = client.head_problem(head, name="standard input")
            sources += [head, sys.stdin.buffer]
        else:
            problem = client.head_problem(path)
            sources.append(path)
        if problem:
            _fail(problem)
    try:
        taken = client.send(host, port, sources, timeout=timeout)
    except client.NotTaken as e:
        why = (client.stopped_at(list(files), e.taken)
               if e.taken is not None and all(str(path) != "-" for path in files) else None)
        if why is None:
            raise
        then = (f"resend from byte {e.taken:,} with that event whole" if why.startswith("the stream ends") else
                "fix the bytes from there before sending them again")
        _fail(f"{client._where(host, port)} took {e.taken:,} of {e.sent:,} bytes sent: at byte {e.taken:,} of the "
              f"stream, {why}; {then}")
    click.echo(f"{taken:,} bytes taken by {host}:{port}")


@main.command()
@click.argument("workloads", nargs=-1)
@click.option("--campaigns", default=12, show_default=True, type=WholeNumber(0, 10_000),
              help="Synthetic campaigns, besides the programmes of examples/ that gen always writes.")
@click.option("--dir", "directory", type=GivenPath(file_okay=False, path_type=Path, created=True), default=None,
              help="Keep the generated worlds here and reuse them (default: temporary, deleted).")
@click.option("--peers", is_flag=True,
              help="Also run the peers (reference model, DuckDB) against sigmatch on a stateless workload.")
# checked whether or not --peers is given: a bad value is a typo to say at once, not to
# find when --peers is added (the peers' world draws its off-net numbers from 10M: at most 100M)
@click.option("--peer-subscribers", default=100_000, show_default=True, type=WholeNumber(100, 100_000_000),
              help="With --peers: subscribers of the peers' stateless world.")
@click.option("--peer-events", default=1_000_000, show_default=True, type=WholeNumber(1, 10**11),
              help="With --peers: events of the peers' stateless trace.")
@click.option("--record", is_flag=True,
              help="Append the results, with the machine, to bench/RESULTS.md (peers: bench/PEERS.md); "
                   "without it nothing is written.")
@click.option("--seed", default=1, show_default=True, type=WholeNumber(0, 2**63 - 1))
@click.option("--service", is_flag=True,
              help="Also run the daemon from a spool against replay on the same files (2M subscribers, "
                   "60M events in 120 files).")
@click.option("--language-cost", is_flag=True,
              help="Run each WORKLOAD with the configuration `gen` writes and with the same one without "
                   "the keys of SPEC §2.1, in turn, --runs times each, and compare the medians "
                   "(needs the [bench] extra).")
@click.option("--runs", default=5, show_default=True, type=WholeNumber(1, 100),
              help="With --language-cost: measured runs of each configuration.")
@click.option("--service-option", "service_options", multiple=True, metavar="OPTION",
              help="An option for the measured daemon (repeatable), e.g. --service-option=--checkpoint-every=0.")
@_one_line_errors
def bench(workloads, campaigns: int, directory, peers: bool, peer_subscribers: int, peer_events: int,
          record: bool, seed: int, service: bool, language_cost: bool, runs: int, service_options):
    """Measure WORKLOADS: S (100k subscribers, 1M events), M (2M, 10M), L (30M, 100M).

    Default: S and M (none with --service alone: the service only). Each is generated (`sigmatch
    gen`) and measured in its own process. --dir is a new or empty folder, or one an earlier
    `sigmatch bench` made."""
    from bench._cli import sigterm_as_ctrl_c
    with sigterm_as_ctrl_c():
        _bench(workloads, campaigns, directory, peers, peer_subscribers, peer_events, record, seed, service,
               language_cost, runs, service_options)


def _duckdb_interrupted(error: Exception) -> bool:
    """Whether a DuckDB error is an interruption: DuckDB takes Ctrl-C for itself and ends its
    query with 'Query interrupted' (InterruptException, or a RuntimeError in some versions);
    an interruption (SIGTERM too) raised in its scan of a registered Arrow table comes back
    wrapped in an InvalidInputException that names KeyboardInterrupt."""
    import duckdb
    return isinstance(error, duckdb.InterruptException) or "interrupt" in str(error).lower()


def _bench(workloads, campaigns: int, directory, peers: bool, peer_subscribers: int, peer_events: int,
           record: bool, seed: int, service: bool, language_cost: bool, runs: int, service_options):
    from bench.run import WORKLOADS, format_table, record as record_results, run_benchmarks
    if peers:
        try:
            import duckdb  # noqa: F401  (the peers' database, an optional extra)
        except ImportError:
            _fail("bench --peers needs DuckDB: pip install 'sigmatch[bench]'")
    if service_options and not service:
        _fail("--service-option is an option of the daemon that --service measures: give --service too")
    if service_options:
        from bench.service import check_daemon_options
        refused = check_daemon_options(tuple(service_options))
        if refused:
            _fail(f"--service-option {' '.join(service_options)}: {refused}")
    # a workload named twice is measured once
    names = list(dict.fromkeys(w.upper() for w in workloads)) or ([] if service else ["S", "M"])
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        _fail(f"unknown workload {unknown[0]!r} (known: {', '.join(WORKLOADS)})")
    if not language_cost and (click.get_current_context().get_parameter_source("runs")
                              == click.core.ParameterSource.COMMANDLINE):
        _fail("--runs is the number of runs of --language-cost: give --language-cost too")
    if directory is not None:
        # made here, before any world is generated, so that a folder that cannot be made is
        # said as the option's; a folder of sigmatch bench's own (bench._cli.folder), which one
        # run at a time uses: two runs generated the same world under each other
        from bench._cli import folder
        directory = folder(directory.absolute(), "--dir", owner="sigmatch bench")
    if language_cost:
        try:
            from bench.language import format_language_cost, record_language_cost, run_language_cost
        except ImportError:
            _fail("bench --language-cost needs tomli-w: pip install 'sigmatch[bench]'")
        for name in names:
            subscribers, events = WORKLOADS[name]
            result = run_language_cost(name, subscribers=subscribers, events=events, campaigns=campaigns,
                                       runs=runs, directory=directory, seed=seed,
                                       echo=lambda line: click.echo(line, err=True))
            click.echo(format_language_cost(result))
            if record:
                record_language_cost(result)
        return
    if names:
        results = run_benchmarks(names, campaigns=campaigns, directory=directory, seed=seed,
                                 echo=lambda line: click.echo(line, err=True))
        click.echo(format_table(results))
        if record:
            record_results(results)
    if peers:
        import duckdb
        from bench.peers.run import format_table as peer_table, record as record_peers, run_peers
        try:
            with tempfile.TemporaryDirectory(prefix="sigmatch-peers-") as scratch:
                rows = run_peers(Path(directory or scratch) / "peers", subscribers=peer_subscribers,
                                 events=peer_events, seed=seed)
        except (duckdb.Error, RuntimeError) as e:
            if _duckdb_interrupted(e):
                raise click.Abort() from None
            raise
        click.echo(peer_table(rows))
        if record:
            record_peers(rows)
    if service:
        from bench.service import format_service, record_service, run_service
        result = run_service(directory=directory, daemon_args=tuple(service_options), seed=seed,
                             echo=lambda line: click.echo(line, err=True))
        click.echo(format_service([result]))
        if record:
            record_service([result])


@main.group(invoke_without_command=True)
@click.option("--config", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="The live configuration file the console edits (approved versions are written to it).")
@click.option("--data", type=GivenPath(file_okay=False, path_type=Path, created=True), default=None,
              help="The console's own directory: console.db (users, versions, approvals, audit trail).")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where the console listens; host defaults to 127.0.0.1 (port 0: any free port).")
@click.option("--daemon-pid", type=GivenPath(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="The pid file of a running `sigmatch run` to reload (SIGHUP) after a version goes live.")
@click.option("--trace-dir", type=GivenPath(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Recorded traces a draft can be simulated on (sigmatch diff).")
@click.option("--out", type=GivenPath(file_okay=False, path_type=Path), default=None, metavar="OUT",
              help="The live service's output directory: its stats.json gives the day's figures.")
@click.option("--lookup", default=None, metavar="URL", help="The service's lookup (sigmatch run --lookup).")
@click.option("--lookup-token", envvar="SIGMATCH_LOOKUP_TOKEN", default=None,
              help="Bearer token of the lookup (or SIGMATCH_LOOKUP_TOKEN).")
@click.option("--metrics", default=None, metavar="URL", help="The service's Prometheus metrics (sigmatch run --metrics).")
@click.option("--simulations", type=WholeNumber(min=1), default=1, show_default=True, metavar="N",
              help="Simulations run at once (each holds two engines in memory).")
@click.pass_context
@_one_line_errors
def console(ctx, config, data, listen, daemon_pid, trace_dir, out, lookup, lookup_token, metrics, simulations):
    """The web console: configure, simulate, approve and watch campaigns in a browser
    (needs the console extra: pip install 'sigmatch[console]').

    Prints the URL it serves on one line; Ctrl-C or SIGTERM stops it."""
    ctx.ensure_object(dict)
    ctx.obj["data"] = data
    if ctx.invoked_subcommand is not None:
        return
    if config is None or data is None:
        _fail("console needs --config CONFIG and --data DIR (see: sigmatch console --help)", 2)
    from engine.service.metrics import parse_hostport
    try:
        host, port = parse_hostport(listen, option="--listen")
    except ValueError as e:
        _fail(str(e))
    if not config.is_file():
        _fail(f"--config {config}: no such file" if not config.exists() else f"--config {config}: not a file")
    try:
        config.open("rb").close()
    except OSError as e:
        _fail(f"--config {config}: cannot read: {e.strerror or e}")
    for option, directory in (("--trace-dir", trace_dir), ("--out", out)):
        if directory is not None and not directory.is_dir():
            _fail(f"{option} {directory}: no such directory")
    if daemon_pid is not None and not daemon_pid.is_file():
        _fail(f"--daemon-pid {daemon_pid}: no such file")
    if lookup and (not (lookup_token or "").strip() or any(c in lookup_token for c in "\r\n\0")):
        _fail("--lookup needs a bearer token: --lookup-token or SIGMATCH_LOOKUP_TOKEN (not an empty one or one "
              "of spaces, and on one line)")
    from engine.service.client import service_address
    for option, address in (("--lookup", lookup), ("--metrics", metrics)):
        try:
            if address is not None:
                service_address(address, option)
        except ValueError as e:
            _fail(str(e))
    try:
        import uvicorn
        from engine.console.app import create_app
    except ImportError as e:
        _fail(f"the console needs its extra ({e.name} is missing): pip install 'sigmatch[console]'")
    from engine.console.settings import Settings
    from engine.language.config import load_config
    try:
        load_config(config)
    except SigmatchError as e:
        # served all the same: the console is where the file gets mended; its campaigns page says so too
        log.warning("the live configuration does not load: %s", str(e).splitlines()[0])
    # the port first: a busy one left --data made for nothing (helper-128)
    sock = _console_socket(host, port)
    store = _console_store(data)
    settings = Settings(config=config.resolve(), data=data.resolve(), host=host, port=sock.getsockname()[1],
                        daemon_pid=daemon_pid, trace_dir=trace_dir, out=out, lookup=lookup,
                        lookup_token=lookup_token, metrics=metrics, simulations=simulations)
    app = create_app(settings, store=store)
    if not store.users():
        log.warning("no user yet: add one with `sigmatch console adduser NAME --role approver --data %s`", data)
    # log_config=None: uvicorn's loggers go through this process's masked handler (a path
    # may hold a number); its access lines show at -v only
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True, server_header=False,
                                           proxy_headers=False))
    click.echo(f"sigmatch console: {settings.url}")
    sys.stdout.flush()
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again for the handler it
    # found: a handler that ignores it makes the stop it asked for an exit 0, not a death
    # by signal (or click's 'aborted' for Ctrl-C)
    import signal
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: None)
    server.run(sockets=[sock])


def _console_store(data: Path):
    """The console's database under `data`, made private; one line when it cannot be written."""
    from engine.console.store import Store
    from engine.sinks import make_private_directories
    try:
        make_private_directories(data)
        probe = data / f".write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        _fail(f"--data {data}: cannot write there: {e.strerror or e}")
    return Store(data / "console.db")


def _console_socket(host: str, port: int):
    """The listening socket, bound before the URL is printed: a busy port is one line, not
    uvicorn's traceback, and port 0 prints the port it got."""
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        _fail(f"--listen {host}:{port}: cannot listen there: {e.strerror or e}")
    sock.set_inheritable(True)
    return sock


@console.command("adduser")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "editor", "approver"]), required=True,
              help="viewer reads; editor also saves drafts; approver also approves (not their own).")
@click.option("--data", type=GivenPath(file_okay=False, path_type=Path, created=True), default=None,
              help="The console's directory (as given to sigmatch console --data).")
@click.pass_context
@_one_line_errors
def console_adduser(ctx, name: str, role: str, data):
    """Add user NAME (or give an existing one a new role and password); the password is read
    from standard input (asked twice at a terminal)."""
    data = data or (ctx.obj or {}).get("data")
    if data is None:
        _fail("console adduser needs --data DIR (the console's directory)", 2)
    import re
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", name):
        _fail(f"user name {name!r}: letters, digits, '.', '_', '@' and '-', starting with a letter or digit, "
              "at most 64 characters")
    try:
        from engine.console.auth import (MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password, needs_rehash,
                                         verify_password)
    except ImportError as e:
        _fail(f"the console needs its extra ({e.name} is missing): pip install 'sigmatch[console]'")
    not_utf8 = ("the password (read from standard input) is not UTF-8 text: set the terminal to UTF-8, "
                "or pipe it in UTF-8")
    try:
        if sys.stdin.isatty():
            password = click.prompt("password", hide_input=True, confirmation_prompt=True, err=True)
        else:
            # bounded: a stream without a line end (< /dev/zero) would fill the memory
            password = sys.stdin.readline(MAX_PASSWORD_LENGTH + 2).rstrip("\r\n")
        # bytes that are not UTF-8 (a GBK terminal) fail to decode, or arrive as surrogates
        # (the C locale): the browser's form sends UTF-8, so such a password could never be
        # typed at the log-in page either
        password.encode("utf-8")
    except UnicodeError:
        _fail(not_utf8)
    if len(password) < MIN_PASSWORD_LENGTH:
        _fail(f"the password (read from standard input) is shorter than {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        _fail(f"the password (read from standard input) is longer than {MAX_PASSWORD_LENGTH:,} characters")
    store = _console_store(data)
    row = store.user(name)
    existed = row is not None
    # the same password again (a new role only) keeps its hash: a new one (a new salt) ended
    # the user's sessions as a new password does, where a new role applies at once
    same = existed and verify_password(row["password_hash"], password) and not needs_rehash(row["password_hash"])
    store.add_user(name, role, row["password_hash"] if same else hash_password(password))
    if existed and not same:
        store.end_sessions(user=name)
    store.add_audit("", "user_changed" if existed else "user_added", name, f"role {role} (sigmatch console adduser)")
    click.echo(f"{'updated' if existed else 'added'} {name} ({role}) in {data / 'console.db'}")



@console.command("deluser")
@click.argument("name")
@click.option("--data", type=GivenPath(file_okay=False, path_type=Path), default=None,
              help="The console's directory (as given to sigmatch console --data).")
@click.pass_context
@_one_line_errors
def console_deluser(ctx, name: str, data):
    """Remove user NAME: logged out at once; the versions, approvals and audit entries that
    name them stay."""
    data = data or (ctx.obj or {}).get("data")
    if data is None:
        _fail("console deluser needs --data DIR (the console's directory)", 2)
    if not (data / "console.db").is_file():
        _fail(f"--data {data}: no console.db there")
    store = _console_store(data)
    if store.user(name) is None:
        known = [u["name"] for u in store.users()]
        import difflib
        close = difflib.get_close_matches(name, known, n=1)
        _fail(f"no user {name!r} in {data / 'console.db'}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    store.execute("DELETE FROM users WHERE name = ?", (name,))
    store.end_sessions(user=name)
    store.add_audit("", "user_removed", name, "sigmatch console deluser")
    click.echo(f"removed {name} from {data / 'console.db'}")

if __name__ == "__main__":
    main()
