"""Search keys of report text: one normalisation for both databases, CJK bigrams for
PostgreSQL's full-text index.

Chinese has no spaces between words, and PostgreSQL ships no Chinese word segmenter
(zhparser and pg_jieba are not Debian packages). So text is indexed the way Lucene's
CJKAnalyzer does it: every run of CJK characters becomes its overlapping character bigrams
(``肺结节`` -> ``肺结 结节``) plus its last character alone, and every other word stays a
word. A query term becomes the same bigrams joined by the phrase operator ``<->``, which
requires them at consecutive positions: exactly "the text contains this string" for CJK
terms, found through a GIN index. A one-character term is a prefix query (``结:*``): every
character is the first of a bigram or a run's last character, which is kept alone for this.
Latin words match by prefix (``nodul`` finds ``nodules``), since the "simple" configuration
does no stemming.

SQLite gets the normalised text and a substring LIKE: simple, correct, a table scan.
"""

from __future__ import annotations

import re
import unicodedata

# CJK Unified Ideographs (+ extension A, compatibility), kana and hangul: scripts without
# spaces between words.
_CJK = (r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af")
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")
# PostgreSQL keeps positions up to 16383; later tokens share the last position, so phrase
# matches beyond ~16k tokens are approximate (reports are far shorter).
_MAX_POSITION = 16383
_MAX_TERMS = 16


def normalize(text: str) -> str:
    """NFKC (full-width letters and digits become ASCII), lower case, one space between
    words: the form both the stored text and the query are compared in."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(folded.split())


def _units(token: str) -> list[str]:
    if not _IS_CJK.match(token):
        return [token]
    if len(token) == 1:
        return [token]
    return [token[i:i + 2] for i in range(len(token) - 1)] + [token[-1]]


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(text: str) -> str:
    """The ``tsvector`` of ``text`` as a literal with explicit positions (cast in SQL, so
    PostgreSQL's own parser, which would split CJK runs differently, is not involved)."""
    positions: dict[str, list[int]] = {}
    pos = 0
    for token in _TOKEN.findall(normalize(text)):
        for unit in _units(token):
            pos = min(pos + 1, _MAX_POSITION)
            positions.setdefault(unit[:200], []).append(pos)
    return " ".join(f"{_quote(lex)}:{','.join(map(str, sorted(set(p))[:256]))}"
                    for lex, p in positions.items())


def query_terms(query: str) -> list[str]:
    """The search terms of a user's query: normalised, split at spaces, at most 16."""
    return [t for t in normalize(query).split(" ") if t][:_MAX_TERMS]


def tsquery_literal(query: str) -> str | None:
    """The ``tsquery`` for a user's query (every term must match), None when it has no
    searchable characters."""
    parts: list[str] = []
    for term in query_terms(query):
        for token in _TOKEN.findall(term):
            if _IS_CJK.match(token):
                if len(token) == 1:
                    parts.append(f"{_quote(token)}:*")
                else:
                    grams = [token[i:i + 2] for i in range(len(token) - 1)]
                    phrase = " <-> ".join(_quote(g) for g in grams)
                    parts.append(f"({phrase})")
            else:
                parts.append(f"{_quote(token)}:*")
    return " & ".join(parts) if parts else None


def like_patterns(query: str) -> list[str]:
    """One ``LIKE ... ESCAPE '\\'`` substring pattern per term, for SQLite."""
    out = []
    for term in query_terms(query):
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        out.append(f"%{escaped}%")
    return out
