"""Named queries: a SQL file of coach questions (``docs/queries.sql``), one query per name.

The format, one block per query::

    -- name: runs_over_cap
    -- question: Which runs went beyond the distance the runner is allowed?
    --   (a question may go on over lines indented after the ``--``)
    -- params: athlete=knee weeks=8
    -- any other comment lines: notes
    SELECT ...;

Everything before the first ``-- name:`` is the file's preamble. ``params``
(optional) gives example values for the query's ``$name`` parameters, used
unless the caller gives its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError

__all__ = ["NamedQuery", "read_named_queries", "parse_named_queries"]

_NAME = re.compile(r"^--\s*name:\s*(?P<name>\S*)\s*$")
_QUESTION = re.compile(r"^--\s*question:\s*(?P<text>.*)$")
_MORE = re.compile(r"^--\s{2,}(?P<text>\S.*)$")
_PARAMS = re.compile(r"^--\s*params:\s*(?P<text>.*)$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class NamedQuery:
    """One query of a named-query file."""

    name: str
    question: str
    sql: str
    params: dict[str, str] = field(default_factory=dict)
    line: int = 0


def read_named_queries(path: Path) -> dict[str, NamedQuery]:
    """The queries of the file at ``path`` by name, in file order.

    Raises
    ------
    InputError
        The file cannot be read, or a block is malformed (names the line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the query file: {exc}", path=path) from exc
    return parse_named_queries(text, where=str(path))


def parse_named_queries(text: str, *, where: str = "<queries>") -> dict[str, NamedQuery]:
    """Parse named-query ``text`` (see the module docstring); ``where`` names it in errors."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _NAME.match(line.strip())]
    queries: dict[str, NamedQuery] = {}
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        query = _block(lines[start:end], first_line=start + 1, where=where)
        if query.name in queries:
            raise InputError(
                f"query name {query.name!r} used twice (first at line {queries[query.name].line})",
                path=where, line=query.line,
            )
        queries[query.name] = query
    return queries


def _block(lines: list[str], *, first_line: int, where: str) -> NamedQuery:
    match = _NAME.match(lines[0].strip())
    assert match is not None
    name = match["name"]
    if not _IDENT.fullmatch(name):
        raise InputError(f"query name must be a word of letters, digits and _ (got {name!r})",
                         path=where, line=first_line)
    question: list[str] = []
    params: dict[str, str] = {}
    body_from = len(lines)
    in_question = False
    for i, raw in enumerate(lines[1:], start=1):
        line = raw.strip()
        if not line.startswith("--"):
            body_from = i
            break
        if m := _QUESTION.match(line):
            question = [m["text"].strip()]
            in_question = True
        elif in_question and (m := _MORE.match(line)):
            question.append(m["text"].strip())
        elif m := _PARAMS.match(line):
            in_question = False
            for item in m["text"].split():
                key, sep, value = item.partition("=")
                if not sep or not _IDENT.fullmatch(key):
                    raise InputError(f"query {name}: params must be name=value words (got {item!r})",
                                     path=where, line=first_line + i)
                params[key] = value
        else:
            in_question = False
    text = " ".join(part for part in question if part)
    if not text:
        raise InputError(f"query {name} has no '-- question:' line", path=where, line=first_line)
    sql = "\n".join(lines[body_from:]).strip()
    # comment lines after the last statement belong to the next block's preamble, not here
    sql = "\n".join(_drop_trailing_comments(sql.splitlines())).strip()
    if not sql.rstrip(";").strip():
        raise InputError(f"query {name} has no SQL", path=where, line=first_line)
    if not sql.endswith(";"):
        raise InputError(f"query {name}: the SQL must end with ';'", path=where, line=first_line)
    return NamedQuery(name=name, question=text, sql=sql, params=params, line=first_line)


def _drop_trailing_comments(lines: list[str]) -> list[str]:
    while lines and (not lines[-1].strip() or lines[-1].strip().startswith("--")):
        lines = lines[:-1]
    return lines
