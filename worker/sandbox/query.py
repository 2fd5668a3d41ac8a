"""The part of Datadog's RUM search syntax the sandbox understands, parsed and evaluated.

Supported: `@attr:value` and `attr:value` (a dotted path into the event's attributes),
`*` and `?` wildcards in unquoted values, quoted values (`"a b"`, matched literally),
`*` alone (every event), negation with a leading `-` or `NOT`, implicit AND between
terms, `AND`, `OR` (AND binds tighter) and parentheses. Free text, ranges (`[a TO b]`)
and comparisons (`>`) are refused with a clear error rather than matched wrongly: the
sandbox stands for Datadog, so it must never answer a query it does not understand.

Pure: `parse` turns text into a tree; a tree's `matches` reads one attribute mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_KEYWORDS = ("AND", "OR", "NOT")
_MAX_DEPTH = 100
"""Nested parentheses and negations at most: a deeper query is refused, not a crash."""
_STOP = frozenset(' \t\r\n()"')
"""Characters that end an unquoted word (unless escaped)."""


class QuerySyntaxError(ValueError):
    """The query cannot be parsed; the message says where and what to write instead."""


@dataclass(frozen=True, slots=True)
class Term:
    """`path:value`: the attribute at `path` matches `pattern` (as text)."""

    path: tuple[str, ...]
    pattern: re.Pattern[str]

    def matches(self, attributes: Mapping[str, object]) -> bool:
        value: object = attributes
        for part in self.path:
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
        if isinstance(value, list):
            return any(self.pattern.fullmatch(_text(item)) for item in value)
        return value is not None and self.pattern.fullmatch(_text(value)) is not None


@dataclass(frozen=True, slots=True)
class Everything:
    """`*`, or an empty query: every event."""

    def matches(self, attributes: Mapping[str, object]) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node

    def matches(self, attributes: Mapping[str, object]) -> bool:
        return not self.operand.matches(attributes)


@dataclass(frozen=True, slots=True)
class AllOf:
    operands: tuple[Node, ...]

    def matches(self, attributes: Mapping[str, object]) -> bool:
        return all(operand.matches(attributes) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class AnyOf:
    operands: tuple[Node, ...]

    def matches(self, attributes: Mapping[str, object]) -> bool:
        return any(operand.matches(attributes) for operand in self.operands)


Node = Term | Everything | Not | AllOf | AnyOf


def parse(text: str) -> Node:
    """The query's tree; raises QuerySyntaxError naming the position of the problem."""
    parser = _Parser(text)
    node = parser.expression()
    parser.skip_space()
    if parser.pos < len(text):
        if text[parser.pos] == ")":
            raise parser.error("this ')' closes no '('")
        raise parser.error("unexpected text")
    return node


def _text(value: object) -> str:
    """How an attribute value reads in a query: booleans as `true`/`false`, like Datadog."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Parser:
    """Recursive descent: expression = and-group (OR and-group)*; and-group = unary
    ((AND)? unary)*; unary = (NOT | -) unary | ( expression ) | term."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, problem: str) -> QuerySyntaxError:
        return QuerySyntaxError(
            f"invalid query at character {self.pos + 1}: {problem}; the sandbox understands "
            '@attr:value, attr:value, * and ? wildcards, "quoted values", -negation, NOT, '
            "AND, OR and parentheses"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def keyword(self, word: str) -> bool:
        """Consumes `word` if it stands here as a whole word."""
        self.skip_space()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and (
            end == len(self.text) or self.text[end] in _STOP
        ):
            self.pos = end
            return True
        return False

    def at_end_of_group(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text) or self.text[self.pos] == ")"

    def expression(self) -> Node:
        if self.at_end_of_group():
            return Everything()
        groups = [self.and_group()]
        while self.keyword("OR"):
            groups.append(self.and_group())
        return groups[0] if len(groups) == 1 else AnyOf(tuple(groups))

    def and_group(self) -> Node:
        operands = [self.unary()]
        while True:
            if self.keyword("AND"):
                operands.append(self.unary())
                continue
            if self.at_end_of_group() or self._next_is("OR"):
                break
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else AllOf(tuple(operands))

    def _next_is(self, word: str) -> bool:
        start = self.pos
        found = self.keyword(word)
        self.pos = start
        return found

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"more than {_MAX_DEPTH} nested parentheses or negations")
        try:
            return self._unary()
        finally:
            self.depth -= 1

    def _unary(self) -> Node:
        self.skip_space()
        if self.pos >= len(self.text):
            raise self.error("a term is missing at the end")
        if self.keyword("NOT"):
            return Not(self.unary())
        char = self.text[self.pos]
        if char == "-":
            self.pos += 1
            if self.pos >= len(self.text) or self.text[self.pos].isspace():
                raise self.error("'-' must stand right before the term it negates")
            return Not(self.unary())
        if char == "(":
            self.pos += 1
            if self.at_end_of_group():
                raise self.error("the parentheses hold no term")
            node = self.expression()
            self.skip_space()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self.error("a '(' is never closed")
            self.pos += 1
            return node
        if char == ")":
            raise self.error("a term is missing before ')'")
        return self.term()

    def term(self) -> Node:
        start = self.pos
        name = self.word(stop_at_colon=True)
        if name in _KEYWORDS:
            self.pos = start
            raise self.error(f"{name} needs a term on each side")
        if self.pos >= len(self.text) or self.text[self.pos] != ":":
            if name == "*":
                return Everything()
            self.pos = start
            raise self.error(
                f"free-text search ({name!r}) is not supported: name the attribute, "
                "as in @view.url:*checkout*"
            )
        self.pos += 1
        path = tuple(name.removeprefix("@").split("."))
        if not all(path):
            self.pos = start
            raise self.error(f"{name!r} is not an attribute path such as @session.id")
        return Term(path, self.value())

    def value(self) -> re.Pattern[str]:
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            return re.compile(re.escape(self.quoted()), re.DOTALL)
        if self.pos >= len(self.text) or self.text[self.pos] in _STOP:
            raise self.error("a value is missing after ':'")
        if self.text[self.pos] in "[{<>":
            raise self.error("ranges and comparisons are not supported")
        raw = self.word(stop_at_colon=False, keep_escapes=True)
        return re.compile(_wildcard_regex(raw), re.DOTALL)

    def quoted(self) -> str:
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(chars)
            if char == "\\" and self.pos < len(self.text):
                char = self.text[self.pos]
                self.pos += 1
            chars.append(char)
        raise self.error("a quoted value is never closed")

    def word(self, *, stop_at_colon: bool, keep_escapes: bool = False) -> str:
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in _STOP or (stop_at_colon and char == ":"):
                break
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                if keep_escapes:
                    chars.append(char)
                char = self.text[self.pos]
                self.pos += 1
            chars.append(char)
        if not chars:
            raise self.error("a term is missing here")
        return "".join(chars)


def _wildcard_regex(raw: str) -> str:
    """`*` any run of characters, `?` one character; `\\*` a literal star."""
    parts: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars, "\\")))
        elif char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return "".join(parts)
