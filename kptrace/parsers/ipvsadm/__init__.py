"""Parse ``ipvsadm`` output into an :class:`IPVSTable`: ``ipvsadm -L[n]`` listings in every column variant
(plain, ``--stats``, ``--rate``, ``--persistent-conn``, ``--thresholds``, ``--tun-info``; with or without
``-n``) and ``ipvsadm-save [-n]`` rules. :func:`parse_ipvsadm` tells the two apart.

Grammar (the line's first token decides its kind; which columns a listing has, the schedulers, the
forwarding methods and the options of a saved rule are data, in ``grammars/ipvsadm.toml``)::

    listing    := [version] [title dest_title] (service dest*)*
    version    := "IP Virtual Server version" VERSION "(size=" INT ")"
    title      := "Prot" "LocalAddress:Port" WORD*          the words name the variant
    dest_title := "->" "RemoteAddress:Port" WORD*
    service    := PROTO ENDPOINT svc_rest | "FWM" INT ["IPv6"] svc_rest
    svc_rest   := SCHED ["(" FLAG ("," FLAG)* ")"] ["persistent" INT ["mask" MASK] ["pe" NAME]] ["ops"]
                | NUMBER{5}                                  --stats, --rate
    dest       := "->" ENDPOINT COLUMN*                      the variant's columns
    ENDPOINT   := (IPV4 | "[" IPV6 "]" | HOSTNAME) ":" (INT | PORTNAME)    names: a listing without -n

    save       := (add_svc | add_dest)*
    add_svc    := "-A" SERVICE option*                       -s SCHED, -p T, -M MASK, --pe NAME, -o, -b FLAGS
    add_dest   := "-a" SERVICE "-r" ENDPOINT option*          -m|-g|-i, -w W, -x U, -y L, --tun-*
    SERVICE    := ("-t" | "-u" | "--sctp-service") ENDPOINT | "-f" INT ["-6"]

The grammar is written with pyparsing (:func:`line_grammar`), and it is what reports a bad line: the
position it stops at is the diagnostic's column. It is not what reads the good lines: a 10k-Service
node lists ~20,000 virtual services and ~100,000 real servers, and the grammar reads about 2,000 lines
a second (a minute for that node). Each line kind has a fast path (``str.split`` and the variant's
column plan, :class:`~kptrace.parsers.ipvsadm.grammar.Plan`) that takes every well-formed line, ~7 us a line with the model values
built (0.9 s for that node's 120,000-line listing); a line it cannot take goes to the grammar, which
says where and why. ``tests/test_ipvs_parsers.py`` checks that both read every fixture line the same
way, and pyparsing is imported only when a line needs it.

Pasted text is read too (kptrace/parsers/paste.py): prompts and command lines, fences, quote markers and
colour codes are taken away first, positions stay the original's, and what is partial is marked: a listing
without its header lines is a fragment, and an elided line (``...``) says which virtual services or real
servers may be missing; the table is then ``truncated`` (a service not in it is unknown, not absent).

Without ``-n`` ipvsadm prints host names for addresses and service names for ports, and cuts an IPv4
address:port to 28 characters. Port names are read with the table in the grammar file; a name that
cannot be turned into an address or a port is kept (``host_name``/``port_name``), its address or port
is None, and a warning at its position says so.

Modules: ``grammar`` (the data and the pyparsing grammar), ``reader`` (what both readers share, on
:class:`~kptrace.parsers.linereader.LineReader`), ``listing`` and ``save`` (one reader each); this module
tells the two forms apart and builds the table.
"""

from __future__ import annotations

from kptrace.errors import Diagnostic, ParseError
from kptrace.model.ipvs import IPVSTable, VirtualService
from kptrace.parsers.ipvsadm.grammar import IpvsadmGrammar, ipvsadm_grammar, line_grammar, scheduler_info
from kptrace.parsers.ipvsadm.listing import ListingReader
from kptrace.parsers.ipvsadm.reader import VS_REAL_SERVERS, IpvsReader
from kptrace.parsers.ipvsadm.save import SaveReader
from kptrace.parsers.linereader import cleaned, paused_gc
from kptrace.parsers.paste import Paste

__all__ = ["IpvsadmGrammar", "ipvsadm_grammar", "line_grammar", "parse_ipvsadm", "scheduler_info"]

_new = tuple.__new__


def parse_ipvsadm(text: str, source: str = "-", *, lenient: bool = False) -> IPVSTable:
    """Read ``ipvsadm -L[n]`` output (any column variant) or ``ipvsadm-save [-n]`` output; which one is
    told from the text. Problems are collected as diagnostics (``file:line:col``, the line, a hint);
    errors raise :class:`ParseError` unless ``lenient``, which keeps what could be read.

    >>> t = parse_ipvsadm("-A -u 10.96.0.10:53 -s rr\\n-a -u 10.96.0.10:53 -r 10.244.1.3:53 -m -w 1\\n", "save.txt")
    >>> vs = t.virtual("udp", "10.96.0.10", 53)
    >>> vs.scheduler, [(r.endpoint, r.forward, r.weight) for r in vs.real_servers], str(vs.real_servers[0].location)
    ('rr', [('10.244.1.3:53', 'Masq', 1)], 'save.txt:2')
    """
    with paused_gc():
        return _parse(text, source, lenient)


def _parse(text: str, source: str, lenient: bool) -> IPVSTable:
    # What a paste adds (prompts, fences, quote markers, elisions, other commands' output) is taken away
    # first; lines stay where they were, and diagnostics are put back at the original line:col.
    paste, kind = cleaned(text, source, "ipvsadm", ("ipvsadm-list", "ipvsadm-save"), "ipvsadm output",
                          "kptrace reads `ipvsadm -Ln` listings and `ipvsadm-save -n` output here")
    reader: IpvsReader = (SaveReader if kind == "ipvsadm-save" else ListingReader)(paste.text, source)
    services, variant, version = reader.read()
    built = []
    seen: dict[tuple, int] = {}
    for fields, rs in services:
        fields[VS_REAL_SERVERS] = tuple(rs)
        vs = _new(VirtualService, fields)
        # Names stand in for what was not resolved, so two unresolved services are not taken for one.
        key = (vs.protocol, vs.address or vs.host_name, vs.port if vs.port is not None else vs.port_name, vs.fwmark, vs.family)
        if key in seen and kind != "ipvsadm-save":
            reader.diags.append(Diagnostic("error", f"virtual service {vs.endpoint} ({vs.protocol}) is listed twice (first at line {seen[key]})",
                                           source, vs.location.line, 1, vs.text, len(vs.protocol),
                                           "two listings in one input? pass one per node"))
        seen.setdefault(key, vs.location.line)
        built.append(vs)
    notes = list(paste.notes) + _elision_notes(paste, reader.lines, built) + list(reader.notes)
    if reader.resolved_ports:
        shown = ", ".join(f"{n} = {p}" for n, p in list(reader.resolved_ports.items())[:10])
        more = f" and {len(reader.resolved_ports) - 10} more" if len(reader.resolved_ports) > 10 else ""
        notes.append(f"port names read with kptrace's table of /etc/services names (the node's may differ): {shown}{more}")
    if reader.unresolved_hosts:
        notes.append(_names_note("host name", "addresses", reader.unresolved_hosts))
    if reader.unresolved_ports:
        notes.append(_names_note("port name", "port numbers", reader.unresolved_ports))
    if not built and not any(d.severity == "error" for d in reader.diags):
        notes.append(f"{source}: no virtual services (an empty IPVS table)")
    if reader.cut:
        notes.append(f"{source}: the input was cut off in the middle of a line: a virtual service or real server "
                     "not in it is unknown, not absent")
    partial = reader.cut or reader.fragment or paste.partial
    table = IPVSTable(tuple(built), source, reader.diagnostics(paste), tuple(notes), variant, version,
                      reader.numeric, partial)
    if not lenient and table.errors:
        raise ParseError(list(table.diagnostics))
    return table


def _elision_notes(paste: Paste, lines: list[str], services: list[VirtualService]) -> list[str]:
    """What each elided line may stand for: the real servers of the service above it, or the virtual
    services between the ones around it.

    >>> t = parse_ipvsadm("TCP  10.1.109.187:443 rr\\n  -> 10.0.0.1:6443  Masq 1 0 0\\n...\\n", "x")
    >>> t.notes[0]
    'x: the listing is elided at line 3: real servers of TCP 10.1.109.187:443 after line 2, and virtual services after it, may be missing'
    """
    out = []
    for n in paste.elisions:
        before = [vs for vs in services if vs.location.line < n]
        after = [vs for vs in services if vs.location.line > n]
        prev = f"{before[-1].protocol} {before[-1].endpoint}" if before else None
        nxt = f"{after[0].protocol} {after[0].endpoint}" if after else None
        following = next((ln.split()[0] for ln in lines[n:] if ln.strip()), "")
        if following == "->":
            what = f"real servers of {prev}" if prev else "real servers, and the virtual service they belong to,"
        else:
            last = before[-1].real_servers[-1].location.line if before and before[-1].real_servers else 0
            own = f"real servers of {prev} after line {last}, and " if prev and last else ""
            if prev and nxt:
                what = f"{own}virtual services between {prev} and {nxt}"
            elif prev:
                what = f"{own}virtual services after {'it' if own else prev}"
            elif nxt:
                what = f"virtual services before {nxt}"
            else:
                what = "virtual services and real servers"
            what = what + "," if own else what
        out.append(f"{paste.source}: the listing is elided at line {n}: {what} may be missing")
    return out


def _names_note(what: str, into: str, names: dict[str, int]) -> str:
    shown = [f"{n} (line {line})" for n, line in list(names.items())[:10]]
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return (f"{len(names)} {what}{'s' if len(names) != 1 else ''} could not be turned into {into}: "
            f"{', '.join(shown)}{more}; take the listing with -n")
