"""Read nftables rulesets, in the three forms people feed them, into one model (:mod:`kptrace.model.nft`):
kube-proxy's knftables transaction text and ``nft list ruleset`` text (:func:`parse_nft_text`), and
``nft -j list ruleset`` JSON (:func:`parse_nft_json`).

The modules, in the order data flows through them (each names what it knows)::

    grammar         the words: keywords, fields, priorities, set types (data in grammars/nft.toml)
    atoms           tokens and literals in canonical spelling
    text            parse_nft_text, parse_all_rules: the text entry points
      loader          the one pass over the lines, with its fast paths
      blocks          a listing's blocks: table/chain/set { ... }
      commands        knftables commands: add|delete|flush table|chain|set|element|rule
      properties      chain, set and table properties (type ... hook ... priority ..., flags, elements)
      state           what the loader's parts share: the ruleset being built, open blocks, diagnostics
      declarations    pyparsing grammar of declarations, used only to explain a refused one
      lines           line-level facts: what starts a statement, brace depth, prompts, hints
    entries         reads filed rules and elements on first use
      shapes          read_statements: a rule by its shape's builder, else in full
      statements      a rule's statements (match, verdict map, NAT, counter, log, limit, ...)
      expressions     selectors, values, anonymous sets and maps, elements, verdicts
      elements        a set's elements
    json_doc        parse_nft_json: the JSON document's items
      json_statements JSON statements and expressions -> model values

Where to add: a keyword, payload field, meta/ct key or set type is a line of ``grammars/nft.toml``; a
selector a branch of ``ExpressionReader.primary`` (expressions.py) and of ``Converter.expr``
(json_statements.py); a statement a method of ``StatementReader`` (statements.py) and of ``Converter``
with its row in ``STATEMENTS``; then the model value in ``kptrace/model/nft.py`` and a case under
``tests/cases/nft/``.
"""

from __future__ import annotations

from kptrace.parsers.nft.json_doc import parse_nft_json
from kptrace.parsers.nft.text import parse_all_rules, parse_nft_text

__all__ = ["parse_all_rules", "parse_nft_json", "parse_nft_text"]
