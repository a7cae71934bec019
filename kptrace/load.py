"""Load a node's dumps into a :class:`Dataplane`: sources -> parsers -> model, plus kube-proxy's implied jumps."""

from __future__ import annotations

import gc
import os
from typing import Iterable

from kptrace.errors import InputError, ParseError, UsageError
from kptrace.model.addr import parse_addr
from kptrace.model.dataplane import Dataplane
from kptrace.model.rules import Ruleset
from kptrace.model.source import SourceText
from kptrace.parsers.detect import FORMATS, detect_format, formats_read
from kptrace.parsers.iptables_save import (
    ParseResult,
    chain_from_lines,
    family_parts,
    parse_all_rules,
    parse_iptables_save,
)
from kptrace.parsers.paste import split_dumps
from kptrace.parsers.rulecheck import check_rules
from kptrace.sources.files import DEFAULT_MAX_BYTES, read_source
from kptrace.tracer.kubeproxy import add_standard_jumps

__all__ = ["load_dumps", "load_texts"]


def load_dumps(paths: Iterable[str], *, node_ips: Iterable[str] = (), lenient: bool = False, full: bool = False,
               max_bytes: int = DEFAULT_MAX_BYTES, expect: dict[str, str] | None = None) -> Dataplane:
    """Read ``iptables-save`` / ``ip6tables-save`` dumps of one node (``-`` is stdin).

    ``full`` parses every rule now (``kptrace parse``); otherwise rules are parsed when first traced.
    ``expect`` maps a path to the format its option promised (``--ipvs`` -> ``ipvsadm``): another format
    there is an error, not silently read as what it is.
    Raises :class:`InputError` / :class:`ParseError` with positions.
    """
    paths = list(paths)
    if paths.count("-") > 1:
        raise UsageError("- (stdin) is given more than once: it can be read only once",
                         hint="give each other input as a file")
    tools = {"ipvsadm": "ipvsadm -Ln", "ipset": "ipset save"}
    sources = [read_source(p, max_bytes=max_bytes, tool=tools.get((expect or {}).get(p, ""), "iptables-save"))
               for p in paths]
    for path, src in zip(paths, sources):
        want = (expect or {}).get(path)
        if want is not None:
            got = detect_format(src.text)
            if got != want:
                what = FORMATS.get(got, "not a format kptrace reads") if got else "not a format kptrace reads"
                raise InputError(f"{src.name}: given as {FORMATS[want]}, but this is {what}",
                                 hint="--ipvs takes `ipvsadm -Ln` or `ipvsadm-save -n` output, --ipset `ipset save` or "
                                      "`ipset list` output; pass iptables-save output with --dump")
    return load_texts(sources, node_ips=node_ips, lenient=lenient, full=full)


def load_texts(sources: Iterable[SourceText], *, node_ips: Iterable[str] = (), lenient: bool = False,
               full: bool = False) -> Dataplane:
    # A big dump is ~500k long-lived objects (lines, chains). Python's cyclic GC walks all of them again
    # and again while the load allocates them, and later on a trace's allocations. None of them form
    # cycles that need collecting, so the load runs with the collector paused and then freezes what it
    # built out of its sight (10k Services: load 1.22 s -> 1.03 s in-process).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_texts(sources, node_ips=node_ips, lenient=lenient, full=full)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _load_texts(sources: Iterable[SourceText], *, node_ips: Iterable[str], lenient: bool, full: bool) -> Dataplane:
    node_ips = tuple(node_ips)
    for a in node_ips:
        try:
            parse_addr(a)
        except ValueError:
            raise InputError(f"--node-ip {a!r} is not an IP address", hint="give each node address as --node-ip 192.168.0.2") from None
    results, ipvs, ipsets, nft = _read_all(sources, lenient=lenient, full=full)
    rulesets = _merge_families(results, full=full)
    if ipvs is not None:
        for fam in sorted({vs.family or 4 for vs in ipvs}):
            if fam not in rulesets:
                rulesets[fam] = Ruleset(fam, sources=[ipvs.source], notes=[
                    f"IPv{fam}: no iptables rules given: only IPVS is traced; what iptables does around it (marks, "
                    f"masquerade, filters) is not checked"])
    if nft is not None:
        _finish_nft(nft, rulesets, lenient=lenient, full=full)
    for rs in rulesets.values():
        if not rs.tables and (ipvs is not None and rs.sources == [ipvs.source] or nft is not None):
            continue  # IPVS or nftables only: no iptables input, said above
        _finish_ruleset(rs, lenient=lenient, full=full)
        errors = [d for d in rs.diagnostics if d.severity == "error"]
        if errors and lenient and not full:  # said with a trace's results (text and JSON); parse lists them itself
            rs.notes.append(f"IPv{rs.family}: {len(errors)} error{'s' * (len(errors) != 1)} in the input, read on (--lenient): "
                            f"the first at {errors[0].location}: {errors[0].message}; what follows may be missing")
    return Dataplane(rulesets, node_ips, ipvs=ipvs, ipsets=ipsets, nft=nft)


def _read_all(sources: Iterable[SourceText], *, lenient: bool, full: bool):
    """Each dump to its own reader: (iptables parse results, the ipvsadm input, the ipset input, the nft ruleset)."""
    results: list[ParseResult] = []
    ipvs = ipsets = nft = None
    # Several dumps pasted one after another (`iptables-save; ipvsadm -Ln`): each to its own reader, at its own lines.
    for src in [SourceText(s.name, part) for s in sources for part in split_dumps(s.text)]:
        fmt = detect_format(src.text)
        if fmt == "ipvsadm":
            from kptrace.parsers.ipvsadm import parse_ipvsadm

            if ipvs is not None:
                raise InputError(f"{src.name}: a second ipvsadm input (already read {ipvs.source})",
                                 hint="give one `ipvsadm -Ln` listing or `ipvsadm-save -n` output per node")
            ipvs = parse_ipvsadm(src.text, src.name, lenient=lenient)
            continue
        if fmt == "ipset":
            from kptrace.parsers.ipset import parse_ipset

            if ipsets is not None:
                raise InputError(f"{src.name}: a second ipset input (already read {ipsets.source})",
                                 hint="give one `ipset save` (or `ipset list`) output per node")
            ipsets = parse_ipset(src.text, src.name, lenient=lenient)
            continue
        if fmt == "nft":  # nftables: text (listing or kube-proxy's transaction) or -j JSON, one model
            from kptrace.parsers.nft import parse_nft_json, parse_nft_text

            read = parse_nft_json if src.text.lstrip().startswith("{") else parse_nft_text
            got = read(src.text, src.name, lenient=lenient)
            if not lenient and not full and read is parse_nft_text:
                _refuse_bad_nft_values(got, src)
            nft = got if nft is None else _merge_nft(nft, got)
            continue
        if fmt is None and src.text.strip():
            from kptrace.parsers.detect import cannot_tell

            raise ParseError([cannot_tell(src.text, src.name)])
        if fmt == "iptables-list":  # what people paste: iptables -L / -S, into the same model
            from kptrace.parsers.listing import parse_iptables_list

            results.append(parse_iptables_list(src.text, src.name, lenient=lenient))
            continue
        if fmt not in (None, "iptables-save"):
            raise InputError(f"{src.name}: this is {FORMATS[fmt]}, which kptrace does not read here",
                             hint=f"kptrace reads {formats_read()}")
        parts = family_parts(src.text, src.name)
        for fam, part in parts:
            dump = parse_iptables_save(SourceText(src.name, part) if len(parts) > 1 else src, family=fam, lenient=lenient)
            if len(parts) > 1:
                kept = [n for n, line in enumerate(part.split("\n"), 1) if line.strip()]
                dump.ruleset.notes.append(f"{src.name}: lines {kept[0]}-{kept[-1]} read as the IPv{fam} dump "
                                         f"(an {'ip6' if fam == 6 else 'ip'}tables-save of its own)")
            results.append(dump)
    return results, ipvs, ipsets, nft


def _merge_families(results: list[ParseResult], *, full: bool) -> dict[int, Ruleset]:
    """One ruleset per address family; two dumps of a family merge by table, never holding the same table twice."""
    rulesets: dict[int, Ruleset] = {}
    for res in results:
        rs = res.ruleset
        if full:
            parse_all_rules(res)
        if rs.family in rulesets:
            prev = rulesets[rs.family]
            clash = sorted(set(prev.tables) & set(rs.tables))
            if clash:
                raise InputError(
                    f"{rs.sources[0]}: a second IPv{rs.family} dump with table {clash[0]!r} (already read from {prev.sources[0]})",
                    hint="pass one iptables-save and one ip6tables-save per node; a node with both legacy and nft "
                         "rules needs both backends' output merged by table")
            prev.tables.update(rs.tables)
            prev.sources.extend(rs.sources)
            prev.notes.extend(rs.notes)
            prev.diagnostics.extend(rs.diagnostics)
        else:
            rulesets[rs.family] = rs
    return rulesets


def _finish_nft(nft, rulesets: dict[int, Ruleset], *, lenient: bool, full: bool) -> None:
    _drop_iptables_nft_copies(nft, rulesets)
    if full:  # `kptrace parse`: every rule and element read and its values checked now
        from kptrace.model.nft_values import check_ruleset
        from kptrace.parsers.nft import parse_all_rules as read_all_nft

        read_all_nft(nft)
        nft.diagnostics.extend(check_ruleset(nft))
    for fam in sorted({f for t in nft.tables.values() for f in _NFT_FAMILIES.get(t.family, ())}):
        if fam not in rulesets:
            rulesets[fam] = Ruleset(fam, sources=list(nft.sources))
    if not lenient:
        errors = [d for d in nft.diagnostics if d.severity == "error"]
        if errors:
            raise ParseError(errors)


def _finish_ruleset(rs: Ruleset, *, lenient: bool, full: bool) -> None:
    """kube-proxy's implied jumps, every rule checked, and notes on the tables the input lacks."""
    rs.notes.extend(add_standard_jumps(rs, chain_from_lines))
    # Every rule is checked (``full`` has parsed them all already: then only the jump graph), so every
    # command refuses what `kptrace parse` refuses, with the same message.
    check_rules(rs, values=not full)
    if not lenient:
        errors = [d for d in rs.diagnostics if d.severity == "error"]
        if errors:
            raise ParseError(errors)
    if "nat" not in rs.tables:
        rs.notes.append(f"IPv{rs.family}: the input has no nat table: no Service rewrites can be traced")
    if "filter" not in rs.tables:
        rs.notes.append(f"IPv{rs.family}: the input has no filter table: REJECT/DROP verdicts "
                        "(Services without endpoints, firewalls) are not checked")


#: the address families an nft table's packets are in (an inet table sees both)
_NFT_FAMILIES = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}


def _drop_iptables_nft_copies(nft, rulesets) -> None:
    """``nft list ruleset`` of an iptables-nft node also shows iptables' tables (``table ip nat``, ``table ip
    filter``, built-in chains in upper case). When the same node's iptables-save gave those tables, they
    are read from there (nft shows some of their matches only as ``xt``) and the nft copy is dropped:
    otherwise each of their chains would run twice at its hook."""
    from kptrace.model.rules import BUILTIN_CHAINS

    for key, t in list(nft.tables.items()):
        rs = rulesets.get({"ip": 4, "ip6": 6}.get(t.family))
        builtin = BUILTIN_CHAINS.get(t.name, ())
        if rs is None or t.name not in rs.tables or not builtin \
                or any(c.hook is not None and c.name not in builtin for c in t.chains.values()):
            continue
        del nft.tables[key]
        nft.notes.append(f"nft table {t.family} {t.name} ({t.source}) is iptables-nft's: read from {rs.sources[0]}, "
                         f"which also holds it")


def _refuse_bad_nft_values(nft, src: SourceText) -> None:
    """Values nft -f refuses (10.0.0.300, dport 99999, ...) are input errors for every command, as for
    `kptrace parse`, when the input is of a size a person writes or pastes (model/nft_values.py SCAN_LIMIT);
    in a larger ruleset a trace refuses the bad rules it reaches and `parse` checks them all."""
    from kptrace.model.nft_values import SCAN_LIMIT, check_lines, suspicious_lines

    if len(src.text) > SCAN_LIMIT:
        return
    lines = suspicious_lines(src.text)
    if not lines:
        return
    errors = [d for d in check_lines(nft, src.name, lines) if d.severity == "error"]
    if errors:
        raise ParseError(errors)


def _merge_nft(a, b):
    """Two nft inputs of one node (kube-proxy's table in one, the others in another): one ruleset."""
    clash = sorted(set(a.tables) & set(b.tables))
    if clash:
        fam, name = clash[0]
        raise InputError(f"{b.sources[0]}: a second copy of nft table {fam} {name} (already read from {a.sources[0]})",
                         hint="pass one `nft list ruleset` per node, or rulesets that hold different tables")
    a.tables.update(b.tables)
    a.sources.extend(b.sources)
    a.notes.extend(b.notes)
    a.diagnostics.extend(b.diagnostics)
    return a


def load_bundle(directory: str | None = None, *, bundle=None, node_ips: Iterable[str] = (), lenient: bool = False,
                full: bool = False) -> Dataplane:
    """A node bundle's dumps; its addresses replace ``node_ips`` and its routes decide MASQUERADE's address."""
    from kptrace.sources.bundle import read_bundle

    if bundle is not None:
        b = bundle
    elif directory is not None:
        b = read_bundle(directory)
    else:
        raise TypeError("load_bundle: give a directory or a bundle")
    said = len(b.notes)
    sources = [SourceText(name, text) for name, text in b.dumps()]
    for name in ("ipvsadm-save.txt", "ipset-save.txt"):  # IPVS mode: the virtual services and the sets
        text = b.files.get(name, "")
        if text.strip():
            sources.append(SourceText(os.path.join(b.path, name) if b.path else f"{b.meta.get('node', 'node')}:{name}", text))
    if not sources:
        raise InputError(f"{b.path or b.meta.get('node')}: the bundle holds no rules (no iptables-save output, no nft ruleset)",
                         hint="see the bundle's meta.json \"skipped\" for why; collect again as root, with iptables-save "
                              "(iptables, IPVS modes) or nft (nftables mode) on the node")
    dp = load_texts(sources, node_ips=tuple(b.node_ips) or tuple(node_ips), lenient=lenient, full=full)
    dp.routes = tuple(b.routes)
    dp.interfaces = b.interfaces
    first = next(iter(dp.rulesets.values()))
    first.notes.extend(b.notes[said:])  # which form of the nft ruleset was read, when not the text
    first.notes.append(f"node {b.meta.get('node', '?')} from a bundle taken {b.meta.get('time', '?')} "
                       f"(kube-proxy mode {b.meta.get('kube_proxy_mode', '?')})")
    return dp
