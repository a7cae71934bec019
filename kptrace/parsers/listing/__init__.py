"""Parse ``iptables -L`` listings and ``iptables -S`` output into the model an iptables-save dump builds.

Every form the tools print is read: ``iptables [-t TABLE] -L [CHAIN]`` with or without ``-n``, ``-v``,
``-x`` and ``--line-numbers``, of one chain or of all, of any table, ``ip6tables`` as well, and
``iptables [-t TABLE] -S [CHAIN] [-v]``; several of them pasted one after another, with the shell
prompts and command lines between them or without (``fixtures/listings/`` has each form).

Grammar (line by line; blank lines and ``# ...`` lines between chains are skipped)::

    listing  := (command | chain | spec)*
    command  := [PROMPT] ("iptables" | "ip6tables") ARGS   says the table, the family and the flags of
                                                            what follows (no -t: the filter table)
    chain    := "Chain" NAME "(" ("policy" POLICY [COUNT "packets," COUNT "bytes"] | N "references") ")"
                header rule*
    header   := ["num"] ["pkts" "bytes"] "target" "prot" "opt" ["in" "out"] "source" "destination"
    rule     := [N] [COUNT COUNT] [TARGET] ["!"]PROT OPT [IFACE IFACE] ["!"]ADDR ["!"]ADDR ["[goto]"] text*
    text     := what a match module or the target prints   (grammars/iptables_list.toml)
    COUNT    := DIGITS ["K" | "M" | "G" | "T"]             (-v without -x: rounded to thousands, millions, ...)
    spec     := "-P" CHAIN POLICY ["-c" N N] | "-N" CHAIN | "-A" CHAIN rule-spec       (iptables -S [-v])

How: each rule line is turned into the line iptables-save would have written for the same rule
(``-A CHAIN -d 10.96.0.1/32 -p tcp -m comment --comment "..." -m tcp --dport 443 -j KUBE-SVC-...``),
and the iptables-save parser's rule parser builds the :class:`~kptrace.model.rules.Rule` from it, so a
listing and a dump of the same rules give the same model and the same traces. A rule keeps its line in
the listing: problems are reported at the listing's ``line:col``, with the listing's line quoted.

The texts the match modules and targets print are data (``grammars/iptables_list.toml``), compiled two
ways: into regular expressions, one per phrase, found by a dictionary lookup on the phrase's first
characters (the fast path, ~10 us a kube-proxy rule), and into a pyparsing grammar, which takes a text
the fast path could not read and, when it cannot read it either, says where and what it expected.
``tests/test_iptables_list.py`` checks that both read every fixture line alike. pyparsing is imported
only when a line needs it.

Without ``-n``, iptables prints names: ``anywhere``, services for ports, protocol names, host and
network names for addresses. They are read back with the fixed tables in ``grammars/names.toml``; a
name those do not resolve is reported (a warning at its position) and kept as written, so the tracer
cannot use it as an address or a port and marks what rests on it as assumed. Listings also lose
things an iptables-save dump has: interface matches without ``-v``, exact counters without ``-x``, and
whatever an iptables older than the one that wrote the rules cannot print; what can be noticed is
noted (a rule that matches everything before others, a Service dispatch rule with no port).

A listing does not always say which table it shows. A command line pasted with it does (``-L``
without ``-t`` lists the filter table); otherwise the table is read from the chains: which built-in
chains are there, which chains kube-proxy (and docker, flannel, kind) put in which table, which
targets work in one table only, and chains listed together are in the same table. The table chosen,
and why, is a note.

Speed: like the iptables-save parser, a load files each rule line under its chain; a rule is turned
into iptables-save form and parsed the first time a trace uses it. A listing of at most
``EAGER_RULES`` rules (a pasted one) is read whole at load instead, so every problem and note is known
up front. Measured on the synthetic 10k-Service node (its nat table as ``iptables -t nat -L -n -v``
prints it, 656,000 lines, 63 MB; ``fixtures/listings/format_listing.py``): load 1.7 s (its
iptables-save nat table: 0.9 s), first trace 0.3 s (it reads KUBE-SERVICES' 20,000 rules for the
destination index; 0.1 s), then 3.2 ms a trace into a Service not traced before (1.9 ms), ~30 us a
rule turned into iptables-save form.
"""

from __future__ import annotations

from kptrace.parsers.listing.grammar import ListingGrammar, listing_grammar, save_string
from kptrace.parsers.listing.reader import EAGER_RULES, ListingResult, parse_iptables_list

__all__ = ["EAGER_RULES", "LISTING_FORMATS", "ListingGrammar", "ListingResult", "listing_grammar", "parse_iptables_list",
           "save_string"]

#: The detected formats (:func:`kptrace.parsers.detect.detect_format`) this parser reads.
LISTING_FORMATS = frozenset({"iptables-list"})
