"""The ``kptrace`` command: one module per subcommand; this one wires them up and turns errors into exit codes."""

from __future__ import annotations

import inspect
import os
import sys

import typer

from kptrace import __version__
from kptrace.errors import EXIT_CODES, EXIT_INTERNAL, KptraceError

_EXIT_HELP = "\n\n".join(f"{code}  {text}" for code, text in EXIT_CODES.items())

app = typer.Typer(
    name="kptrace",
    help=("Trace packets through kube-proxy data planes: where does a packet to a Service go, and with what "
          "probability?\n\n[bold]Exit codes[/bold]\n\n" + _EXIT_HELP),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kptrace {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors (for bug reports)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug or bool(os.environ.get("KPTRACE_DEBUG"))


def _help(doc: str | None) -> str:
    """A command's docstring as help: each paragraph's hard-wrapped lines joined (the help wraps them to the
    terminal itself; kept, they left ragged short lines), indented lines (examples) kept as they are."""
    paragraphs = []
    for para in inspect.cleandoc(doc or "").split("\n\n"):
        lines = para.split("\n")
        paragraphs.append(para if any(x[:1].isspace() for x in lines) else " ".join(x.strip() for x in lines))
    return "\n\n".join(paragraphs)


def _register() -> None:
    from kptrace.cli import collect, conntrack, diff, drift, monitor, node, packet, parse, svc, verify

    app.command("packet", help=_help(packet.__doc__))(packet.packet)
    app.command("svc", help=_help(svc.__doc__))(svc.svc)
    app.command("parse", help=_help(parse.__doc__))(parse.parse)
    app.command("verify", help=_help(verify.__doc__))(verify.verify)
    app.command("collect", help=_help(collect.__doc__))(collect.collect)
    app.command("drift", help=_help(drift.__doc__))(drift.drift)
    app.command("diff", help=_help(diff.__doc__))(diff.diff)
    app.command("conntrack", help=_help(conntrack.__doc__))(conntrack.conntrack)
    app.command("monitor", help=_help(monitor.__doc__))(monitor.monitor)
    app.command("node", help=_help(node.__doc__))(node.node)


_register()


class _EndsQuietly:
    """stdout that stops writing, quietly, once its reader has gone (``kptrace ... | head``).

    Without it, click turns the BrokenPipeError into exit 1, which says "found problems". With it the
    command finishes and exits with its own code; what it would still have printed goes nowhere.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self._gone = True
        try:  # the interpreter flushes stdout at exit: give it somewhere to go
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: errors become a message on stderr and a documented exit code."""
    if not isinstance(sys.stdout, _EndsQuietly) and sys.stdout is not None:
        sys.stdout = _EndsQuietly(sys.stdout)
    try:
        app(args=argv, standalone_mode=True)
    except KptraceError as e:
        if _state["debug"]:
            raise
        from kptrace.cli.common import stderr_console
        from kptrace.errors import ParseError

        prefix = "" if isinstance(e, ParseError) else "[bold red]error:[/] "  # diagnostics carry their own "error:"
        stderr_console().print(prefix + _escape(e.render()), highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        extra = {"kubernetes": "kube", "paramiko": "ssh"}.get((e.name or "").split(".")[0])
        if extra is None or _state["debug"]:
            raise
        from kptrace.errors import EXIT_ENVIRONMENT

        print(f"error: this needs the {e.name} package, which is not installed\n"
              f"  hint: pip install 'kptrace[{extra}]' (or pip install {e.name})", file=sys.stderr)
        sys.exit(EXIT_ENVIRONMENT)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug: say so, briefly, unless --debug
        if _state["debug"]:
            raise
        print(f"kptrace: internal error: {type(e).__name__}: {e}\n  rerun with --debug for the traceback, and report it",
              file=sys.stderr)
        sys.exit(EXIT_INTERNAL)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
