"""Search keys of report text: normalisation, CJK bigrams, tsquery/LIKE construction."""

from __future__ import annotations

import re

from cloudfilm.infrastructure.reports import search


def lexemes(vector: str) -> dict[str, list[int]]:
    out = {}
    for lex, positions in re.findall(r"'((?:[^']|'')*)':([\d,]+)", vector):
        out[lex.replace("''", "'")] = [int(p) for p in positions.split(",")]
    return out


def test_normalize_folds_width_case_and_spaces() -> None:
    assert search.normalize("  ＣＴ　胸部  Nodule\tＡ１ ") == "ct 胸部 nodule a1"


def test_cjk_runs_become_bigrams_plus_last_character_at_consecutive_positions() -> None:
    lex = lexemes(search.tsvector_literal("右肺结节 8mm，CT示"))
    assert lex == {"右肺": [1], "肺结": [2], "结节": [3], "节": [4], "8mm": [5], "ct": [6],
                   "示": [7]}


def test_repeated_bigrams_keep_every_position() -> None:
    lex = lexemes(search.tsvector_literal("结节结节"))
    assert lex["结节"] == [1, 3]
    assert lex["节结"] == [2]


def test_punctuation_quotes_and_backslashes_split_words() -> None:
    # Lexemes hold word characters only, so no quote can break out of a literal.
    assert lexemes(search.tsvector_literal("o'neil back\\slash")) == {
        "o": [1], "neil": [2], "back": [3], "slash": [4]}
    assert search.tsquery_literal("o'neil") == "'o':* & 'neil':*"


def test_tsquery_phrases_prefixes_and_and() -> None:
    assert search.tsquery_literal("结节") == "('结节')"
    assert search.tsquery_literal("磨玻璃结节") == "('磨玻' <-> '玻璃' <-> '璃结' <-> '结节')"
    assert search.tsquery_literal("肺") == "'肺':*"
    assert search.tsquery_literal("右肺 Nodule") == "('右肺') & 'nodule':*"
    assert search.tsquery_literal("  ，。 ") is None
    assert search.tsquery_literal("") is None


def test_like_patterns_escape_wildcards() -> None:
    assert search.like_patterns("100% a_b") == ["%100\\%%", "%a\\_b%"]
    assert search.like_patterns("结节 右肺") == ["%结节%", "%右肺%"]


def test_query_terms_are_bounded() -> None:
    assert len(search.query_terms(" ".join(str(i) for i in range(100)))) == 16
