"""The `where` expression language of SPEC §2: a safe parser and a vectorised evaluator.

Grammar (keywords are lower case; `tags` is the profile's tag set, not an attribute):

    condition  := or
    or         := and ('or' and)*
    and        := not ('and' not)*
    not        := 'not' not | comparison
    comparison := sum [ ('==' | '!=' | '<' | '<=' | '>' | '>=') sum
                      | ['not'] 'in' '[' [literal (',' literal)* [',']] ']'
                      | ['not'] 'in' 'tags' ]          (left side a string literal)
    sum        := product (('+' | '-') product)*
    product    := unary (('*' | '/') unary)*
    unary      := '-' unary | atom
    atom       := NUMBER | STRING | NAME | '(' condition ')'
    literal    := ['-'] NUMBER | STRING

The parser is a hand-written recursive descent over a token list; nothing here ever
hands the text to eval, exec or Python's own parser, so `__import__('os')`, `a.b` and
`f(x)` are plain syntax errors. Parenthesised sub-expressions may be conditions or
values; which is which is checked right after parsing, so `(a > 1) + 2` and a bare
`arpu` are rejected before any profile is seen.

Semantics, evaluated over whole columns at once (pyarrow.compute, numpy):
a comparison or `in` involving a null is false (`!=` and `not in` too); `and`, `or` and
`not` are plain two-valued logic over those booleans; arithmetic propagates nulls,
`/` is true division and gives null when dividing by zero; strings (ISO dates among
them) compare by code point. `'t' in tags` is false for a subscriber without tags and
`'t' not in tags` true.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError
from engine.privacy import mask_msisdn

__all__ = [
    "WhereError", "Expr", "Number", "String", "Attribute", "Negate", "Arithmetic",
    "Compare", "InList", "InTags", "And", "Or", "Not",
    "parse", "unparse", "attributes", "uses_tags", "check", "evaluate",
]

MAX_WHERE_LEN = 10_000   # a where longer than this is a mistake, not a campaign
# Parsing, checking and evaluating all recurse over the tree, so both the nesting the
# parser sees (parentheses, `not`, unary minus) and the tree's depth (long `or` chains
# included) are bounded well below Python's recursion limit.
MAX_DEPTH = 100
MAX_TREE_DEPTH = 300
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ExpressionError(ConfigError):
    """A malformed expression of the campaign language (`where`, `when`). `pos` is the 0-based
    offset into `text` where the problem is, or None when it is not at one place."""

    def __init__(self, message: str, text: str | None = None, pos: int | None = None):
        self.text = text
        self.pos = pos
        self.reason = message
        if text is not None and pos is not None:
            # an expression written as a multi-line TOML string: its line and column, and the
            # text quoted on one line, since an error is one line
            line = text.count("\n", 0, pos)
            column = pos - text.rfind("\n", 0, pos)
            place = f"line {line + 1}, column {column}" if line else f"column {pos + 1}"
            message = f"{message} at {place} of {_quote(text)}"
        super().__init__(message)


class WhereError(ExpressionError):
    """A `where` expression is malformed or does not fit the profiles (`pos` None: an unknown
    attribute found by `check`)."""


def _quote(text: str) -> str:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return '"' + shown.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


# ---------------------------------------------------------------------------- the tree
# Nodes are frozen so a parsed where can be shared and compared; `pos` (where the node
# starts in the source) is left out of equality so that parse(unparse(e)) == e.

@dataclass(frozen=True)
class Number:
    value: Union[int, float]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class String:
    value: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Attribute:
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Negate:
    operand: "Expr"
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Arithmetic:
    op: str                      # + - * /
    left: "Expr"
    right: "Expr"
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Compare:
    op: str                      # == != < <= > >=
    left: "Expr"
    right: "Expr"
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class InList:
    operand: "Expr"
    values: tuple[Union[int, float, str], ...]
    negated: bool = False
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class InTags:
    tag: str
    negated: bool = False
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class And:
    left: "Expr"
    right: "Expr"
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Or:
    left: "Expr"
    right: "Expr"
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Not:
    operand: "Expr"
    pos: int = field(default=0, compare=False)


Expr = Union[Number, String, Attribute, Negate, Arithmetic, Compare, InList, InTags, And, Or, Not]
CONDITIONS = (Compare, InList, InTags, And, Or, Not)
COMPARE_OPS = ("==", "!=", "<", "<=", ">", ">=")
KEYWORDS = frozenset({"and", "or", "not", "in"})
TAGS = "tags"


# ---------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class _Token:
    kind: str      # "num" "str" "name" "op" "end"
    value: Any
    pos: int


_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in "'\"":
            value, end = _read_string(text, i)
            tokens.append(_Token("str", value, i))
            i = end
        elif c.isascii() and c.isdigit():
            m = _NUMBER.match(text, i)
            if m.end() < n and (text[m.end()] == "." or _NAME.match(text, m.end())):
                raise WhereError(f"malformed number {text[i:m.end() + 1]!r}", text, i)
            literal = m.group()
            if "." in literal or "e" in literal or "E" in literal:
                value = float(literal)
                if value == float("inf"):
                    raise WhereError("number too large", text, i)
            else:
                # checked on the text first: int() of thousands of digits is refused (or slow)
                value = int(literal) if len(literal) <= 19 else INT64_MAX + 1
                if value > INT64_MAX:
                    raise WhereError("integer too large (more than 64 bits)", text, i)
            tokens.append(_Token("num", value, i))
            i = m.end()
        elif (m := _NAME.match(text, i)) is not None:
            tokens.append(_Token("name", m.group(), i))
            i = m.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                what = "'='; use '==' to compare" if c == "=" else repr(c)
                raise WhereError(f"unexpected character {what}", text, i)
            tokens.append(_Token("op", op, i))
            i += len(op)
    tokens.append(_Token("end", None, n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in _ESCAPES:
                raise WhereError("unknown escape in string (only \\\\, \\' and \\\" are allowed)", text, i)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    raise WhereError("unterminated string", text, start)


# ---------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    # -- cursor
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def at(self, kind: str, value: Any = None) -> bool:
        t = self.tok
        return t.kind == kind and (value is None or t.value == value)

    def at_keyword(self, word: str) -> bool:
        return self.at("name", word)

    def take(self) -> _Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, kind: str, value: Any, what: str) -> _Token:
        if not self.at(kind, value):
            self.fail(f"expected {what}")
        return self.take()

    def fail(self, message: str, pos: int | None = None):
        t = self.tok
        if pos is None:
            found = "end of expression" if t.kind == "end" else _describe(t)
            message = f"{message}, found {found}"
            pos = t.pos
        raise WhereError(message, self.text, pos)

    # -- grammar
    def parse(self) -> Expr:
        if not self.text.strip():
            raise WhereError("where is empty", self.text, 0)
        expr = self.condition()
        if not self.at("end"):
            t = self.tok
            if t.kind == "op" and t.value == "(":
                self.fail("function calls are not allowed", t.pos)
            self.fail("unexpected " + _describe(t), t.pos)
        if not isinstance(expr, CONDITIONS):
            raise WhereError("where must be a condition (a comparison, 'in', 'and', 'or' or 'not')",
                             self.text, _start(expr))
        return expr

    def condition(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"expression nested more than {MAX_DEPTH} deep", self.tok.pos)
        expr = self.or_()
        self.depth -= 1
        return expr

    def or_(self) -> Expr:
        left = self.and_()
        while self.at_keyword("or"):
            pos = self.take().pos
            right = self.and_()
            left = Or(self.as_condition(left, "or"), self.as_condition(right, "or"), pos)
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while self.at_keyword("and"):
            pos = self.take().pos
            right = self.not_()
            left = And(self.as_condition(left, "and"), self.as_condition(right, "and"), pos)
        return left

    def not_(self) -> Expr:
        if self.at_keyword("not"):
            pos = self.take().pos
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"expression nested more than {MAX_DEPTH} deep", pos)
            operand = self.not_()
            self.depth -= 1
            return Not(self.as_condition(operand, "not"), pos)
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.sum()
        t = self.tok
        if t.kind == "op" and t.value in COMPARE_OPS:
            self.take()
            right = self.sum()
            expr = Compare(t.value, self.as_value(left, t.value), self.as_value(right, t.value), t.pos)
            nxt = self.tok
            if nxt.kind == "op" and nxt.value in COMPARE_OPS:
                self.fail("comparisons cannot be chained; use 'and'", nxt.pos)
            return expr
        if self.at_keyword("in"):
            return self.membership(left, negated=False, pos=self.take().pos)
        if self.at_keyword("not") and self.tokens[self.i + 1].kind == "name" \
                and self.tokens[self.i + 1].value == "in":
            pos = self.take().pos
            self.take()
            return self.membership(left, negated=True, pos=pos)
        return left

    def membership(self, left: Expr, negated: bool, pos: int) -> Expr:
        if self.at_keyword(TAGS):
            self.take()
            if not isinstance(left, String):
                self.fail("the left side of 'in tags' must be a quoted tag name", _start(left))
            return InTags(left.value, negated, _start(left))
        if not self.at("op", "["):
            self.fail("expected '[' or 'tags' after 'in'")
        operand = self.as_value(left, "in")
        bracket = self.take().pos
        values: list[Union[int, float, str]] = []
        while not self.at("op", "]"):
            values.append(self.literal())
            if not self.at("op", ","):
                break
            self.take()
        self.expect("op", "]", "',' or ']'")
        kinds = {isinstance(v, str) for v in values}
        if len(kinds) > 1:
            self.fail("a list mixes strings and numbers", bracket)
        return InList(operand, tuple(values), negated, pos)

    def literal(self) -> Union[int, float, str]:
        t = self.tok
        if t.kind == "str":
            return self.take().value
        sign = 1
        if t.kind == "op" and t.value == "-":
            self.take()
            sign = -1
        if not self.at("num"):
            self.fail("expected a number or string literal in the list")
        return sign * self.take().value

    def sum(self) -> Expr:
        left = self.product()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            t = self.take()
            right = self.product()
            left = Arithmetic(t.value, self.as_value(left, t.value), self.as_value(right, t.value), t.pos)
        return left

    def product(self) -> Expr:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.value in ("*", "/"):
            t = self.take()
            right = self.unary()
            left = Arithmetic(t.value, self.as_value(left, t.value), self.as_value(right, t.value), t.pos)
        return left

    def unary(self) -> Expr:
        if self.at("op", "-"):
            pos = self.take().pos
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(f"expression nested more than {MAX_DEPTH} deep", pos)
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, Number):
                # Folded so that `-5` is a literal, as it is inside an `in` list.
                return Number(-operand.value, pos)
            return Negate(self.as_value(operand, "-"), pos)
        return self.atom()

    def atom(self) -> Expr:
        t = self.tok
        if t.kind == "num":
            self.take()
            return Number(t.value, t.pos)
        if t.kind == "str":
            self.take()
            return String(t.value, t.pos)
        if t.kind == "name":
            if t.value in KEYWORDS:
                self.fail(f"unexpected keyword '{t.value}'", t.pos)
            if t.value == TAGS:
                self.fail("'tags' can only be used as 'tag' in tags", t.pos)
            if t.value == "msisdn":
                # the profiles' key, loaded as the subscriber index and never as a column: it
                # went through to the compile and failed there with a traceback (helper-124)
                self.fail("'msisdn' is not an attribute: choose subscribers by number with a list "
                          "(whitelist, [lists])", t.pos)
            self.take()
            if self.at("op", "("):
                self.fail("function calls are not allowed", self.tok.pos)
            return Attribute(t.value, t.pos)
        if t.kind == "op" and t.value == "(":
            self.take()
            inner = self.condition()
            self.expect("op", ")", "')'")
            return inner
        self.fail("expected a number, string, attribute or '('")

    def as_condition(self, expr: Expr, where: str) -> Expr:
        if not isinstance(expr, CONDITIONS):
            self.fail(f"the operand of '{where}' must be a condition, not a value", _start(expr))
        return expr

    def as_value(self, expr: Expr, where: str) -> Expr:
        if isinstance(expr, CONDITIONS):
            self.fail(f"the operand of '{where}' must be a value, not a condition", _start(expr))
        return expr


def _describe(t: _Token) -> str:
    if t.kind == "end":
        return "end of expression"
    if t.kind == "str":
        return "string " + _quote(t.value)
    if t.kind == "num":
        return f"number {t.value}"
    return f"'{t.value}'"


def _start(expr: Expr) -> int:
    """The leftmost source position of `expr` (binary nodes record their operator's)."""
    while isinstance(expr, (Arithmetic, Compare, And, Or)):
        expr = expr.left
    if isinstance(expr, InList):
        return _start(expr.operand)
    return expr.pos


def parse(text: str) -> Expr:
    """Parse a `where` into its tree. Raises WhereError naming the position of the problem."""
    if not isinstance(text, str):
        raise WhereError(f"where must be a string, not {type(text).__name__}")
    if len(text) > MAX_WHERE_LEN:
        raise WhereError(f"where is longer than {MAX_WHERE_LEN} characters")
    expr = _Parser(text).parse()
    if _depth(expr) > MAX_TREE_DEPTH:
        raise WhereError(f"where has more than {MAX_TREE_DEPTH} levels of operators; "
                         f"use 'in [...]' for long alternatives", text, 0)
    return expr


def _depth(expr: Expr) -> int:
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest


# ---------------------------------------------------------------------------- walking

def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, (Arithmetic, Compare, And, Or)):
        return (expr.left, expr.right)
    if isinstance(expr, (Negate, Not, InList)):
        return (expr.operand,)
    return ()


def _walk(expr: Expr):
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_children(node))


def attributes(expr: Expr) -> set[str]:
    """The profile attribute names `expr` reads (`tags` is not one)."""
    return {node.name for node in _walk(expr) if isinstance(node, Attribute)}


def uses_tags(expr: Expr) -> bool:
    return any(isinstance(node, InTags) for node in _walk(expr))


def unparse(expr: Expr) -> str:
    """Source text for `expr`, fully parenthesised, such that parse(unparse(e)) == e."""
    if isinstance(expr, Number):
        text = repr(expr.value)
        return f"({text})" if expr.value < 0 or text.startswith("-") else text
    if isinstance(expr, String):
        return _string_literal(expr.value)
    if isinstance(expr, Attribute):
        return expr.name
    if isinstance(expr, Negate):
        return f"(-{unparse(expr.operand)})"
    if isinstance(expr, (Arithmetic, Compare)):
        return f"({unparse(expr.left)} {expr.op} {unparse(expr.right)})"
    if isinstance(expr, InList):
        values = ", ".join(_string_literal(v) if isinstance(v, str) else repr(v) for v in expr.values)
        return f"({unparse(expr.operand)} {'not in' if expr.negated else 'in'} [{values}])"
    if isinstance(expr, InTags):
        return f"({_string_literal(expr.tag)} {'not in' if expr.negated else 'in'} tags)"
    if isinstance(expr, And):
        return f"({unparse(expr.left)} and {unparse(expr.right)})"
    if isinstance(expr, Or):
        return f"({unparse(expr.left)} or {unparse(expr.right)})"
    if isinstance(expr, Not):
        return f"(not {unparse(expr.operand)})"
    raise TypeError(f"not a where expression: {expr!r}")


def _string_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------- types

NUMBER, STRING = "number", "string"
ANY = "any"         # a column of no rows (_column_kind)


def _column_kind(name: str, array) -> str:
    if len(array) == 0:
        # a snapshot without rows: its columns' types are unknown, and nothing can match
        # (check warns of the empty snapshot); every use of them is let through
        return ANY
    t = array.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return NUMBER
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_temporal(t):
        return STRING    # dates compare as their ISO text (SPEC §2)
    raise WhereError(f"attribute '{name}' has type {t}, which where cannot use")


def check(expr: Expr, profiles) -> None:
    """Check `expr` against the profile columns: every attribute exists and every operator
    gets operands of a type it accepts. Raises WhereError (a ConfigError)."""
    if isinstance(expr, str):
        expr = parse(expr)
    columns = profiles.columns
    missing = sorted(attributes(expr) - columns.keys())
    if missing:
        # the file's own columns, not only those read (only what some where names is loaded)
        header = sorted(name for name in getattr(profiles, "header", ()) or columns if name not in ("msisdn", "tags"))
        known = ", ".join(header) or "none"
        if len(known) > 200:
            known = known[:197] + "..."
        hint = difflib.get_close_matches(missing[0].lower(), header, n=1)
        guess = f"; did you mean '{hint[0]}'?" if hint else ""
        raise WhereError(f"unknown attribute '{missing[0]}' (profile columns: {known}){guess}")
    if uses_tags(expr) and profiles.tags is None:
        raise WhereError("'in tags' is used but the profiles have no tags column")
    try:
        _check(expr, columns)
    except WhereError as error:
        # a column typed as text because of a few values: name the first, where to look
        for name in sorted(attributes(expr)):
            found = getattr(profiles, "not_numbers", {}).get(name)
            if found is not None and name in str(error):
                row, value = found
                # a profile value may hold a number glued to letters: masked all the same
                shown = re.sub(r"[0-9]{7,}", lambda m: mask_msisdn(m[0]), str(value)[:40])
                raise WhereError(f"{error} ('{name}' is a string column: its row {row:,} holds "
                                 f"{_string_literal(shown)}, not a number)") from None
        raise


def _check(expr: Expr, columns) -> str | None:
    """Returns the kind of a value node (NUMBER / STRING); None for conditions."""
    if isinstance(expr, Number):
        return NUMBER
    if isinstance(expr, String):
        return STRING
    if isinstance(expr, Attribute):
        return _column_kind(expr.name, columns[expr.name])
    if isinstance(expr, Negate):
        if _check(expr.operand, columns) not in (NUMBER, ANY):
            raise WhereError(f"cannot negate the string {unparse(expr.operand)}")
        return NUMBER
    if isinstance(expr, Arithmetic):
        for side in (expr.left, expr.right):
            if _check(side, columns) not in (NUMBER, ANY):
                raise WhereError(f"arithmetic '{expr.op}' on the string {unparse(side)}")
        return NUMBER
    if isinstance(expr, Compare):
        left, right = _check(expr.left, columns), _check(expr.right, columns)
        if left != right and ANY not in (left, right):
            raise WhereError(f"cannot compare {left} {unparse(expr.left)} with "
                             f"{right} {unparse(expr.right)}")
        return None
    if isinstance(expr, InList):
        kind = _check(expr.operand, columns)
        if expr.values and kind != ANY and (kind == STRING) != isinstance(expr.values[0], str):
            listed = STRING if isinstance(expr.values[0], str) else NUMBER
            raise WhereError(f"{kind} {unparse(expr.operand)} cannot be in a list of {listed}s")
        return None
    for child in _children(expr):
        _check(child, columns)
    return None


# ---------------------------------------------------------------------------- evaluation

def evaluate(expr: Expr, profiles) -> np.ndarray:
    """One boolean per subscriber (aligned with `profiles.msisdn`): does `expr` hold?

    Whole columns at a time, so 30 M subscribers take seconds, not minutes."""
    if isinstance(expr, str):
        expr = parse(expr)
    check(expr, profiles)
    n = len(profiles.msisdn)
    if n == 0:
        return np.zeros(0, dtype=bool)      # columns of no rows have no type to compute with
    return _Evaluator(profiles, n).condition(expr)


class _Evaluator:
    def __init__(self, profiles, n: int):
        self.profiles = profiles
        self.n = n

    def condition(self, expr: Expr) -> np.ndarray:
        if isinstance(expr, And):
            return np.logical_and(self.condition(expr.left), self.condition(expr.right))
        if isinstance(expr, Or):
            return np.logical_or(self.condition(expr.left), self.condition(expr.right))
        if isinstance(expr, Not):
            return np.logical_not(self.condition(expr.operand))
        if isinstance(expr, Compare):
            return self.compare(expr)
        if isinstance(expr, InList):
            return self.in_list(expr)
        if isinstance(expr, InTags):
            return self.in_tags(expr)
        raise TypeError(f"not a condition: {expr!r}")

    def _to_bool(self, result) -> np.ndarray:
        """A pyarrow boolean result (null = false) as a numpy array of length n."""
        if isinstance(result, pa.Scalar):
            return np.full(self.n, result.as_py() is True)
        result = pc.fill_null(result, False)
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks()
        return result.to_numpy(zero_copy_only=False)

    def compare(self, expr: Compare) -> np.ndarray:
        left, right = self.value(expr.left), self.value(expr.right)
        compare = _COMPARE[expr.op]
        over = self._over(left, right)
        if over is not None:
            if any(not isinstance(v, _Wide) and pa.types.is_floating(v.type) for v in (left, right)):
                return self._to_bool(compare(_float(left), _float(right)))
            # the rows whose value overflowed compare as floats, the others exactly
            exact = self._to_bool(compare(*(v.exact if isinstance(v, _Wide) else v for v in (left, right))))
            return np.where(over, self._to_bool(compare(_float(left), _float(right))), exact)
        if _is_number(left) and _is_number(right) and left.type != right.type:
            # pyarrow's implicit int -> float cast refuses integers above 2**53.
            left, right = _float(left), _float(right)
        return self._to_bool(compare(left, right))

    def _over(self, *values) -> Any:
        """The rows of `values` (some _Wide) whose value overflowed int64, or None if none is."""
        overs = [v.over for v in values if isinstance(v, _Wide)]
        return np.logical_or.reduce(overs) if overs else None

    def in_list(self, expr: InList) -> np.ndarray:
        operand = self.value(expr.operand)
        if isinstance(operand, _Wide):
            # the rows that overflowed are looked up as floats, the others exactly
            exact, approx = (self._in_list(expr, v) for v in (operand.exact, operand.approx))
            return np.where(operand.over, approx, exact)
        return self._in_list(expr, operand)

    def _in_list(self, expr: InList, operand) -> np.ndarray:
        if isinstance(operand, pa.Scalar):
            # A constant operand: one answer for everyone.
            v = operand.as_py()
            return np.full(self.n, v is not None and (v in expr.values) != expr.negated)
        if not _is_number(operand):
            value_set = pa.array(expr.values, operand.type)
        elif pa.types.is_integer(operand.type) and all(isinstance(v, int) for v in expr.values):
            operand, value_set = pc.cast(operand, pa.int64()), pa.array(expr.values, pa.int64())
        else:
            # A float on either side: compare as float64, so that 2 in [2.0] holds as it reads.
            # + 0.0 turns -0.0 into 0.0: is_in compares floats bit by bit, and -0.0 == 0 holds.
            operand = pc.add(_float(operand), 0.0)
            value_set = pa.array([float(v) + 0.0 for v in expr.values], pa.float64())
        found = pc.is_in(operand, value_set=value_set, skip_nulls=True)
        if expr.negated:
            found = pc.invert(found)
        # A null operand is in no list and not-in no list either.
        return self._to_bool(pc.if_else(pc.is_valid(operand), found, False))

    def in_tags(self, expr: InTags) -> np.ndarray:
        tags = self.profiles.tags
        has = np.zeros(self.n, dtype=bool)
        if tags is not None:
            if isinstance(tags, pa.ChunkedArray):
                tags = tags.combine_chunks()
            match = pc.equal(tags.flatten(), pa.scalar(expr.tag)).to_numpy(zero_copy_only=False)
            parents = pc.list_parent_indices(tags).to_numpy(zero_copy_only=False)
            has[parents[match]] = True
        return ~has if expr.negated else has

    def value(self, expr: Expr):
        """A pa.Array of length n, or a pa.Scalar for constant sub-expressions."""
        if isinstance(expr, Number):
            return pa.scalar(expr.value, pa.int64() if isinstance(expr.value, int) else pa.float64())
        if isinstance(expr, String):
            return pa.scalar(expr.value, pa.string())
        if isinstance(expr, Attribute):
            column = self.profiles.columns[expr.name]
            if pa.types.is_temporal(column.type):
                column = pc.cast(column, pa.string())
            return column
        if isinstance(expr, Negate):
            return _arithmetic("neg", self.value(expr.operand))
        if isinstance(expr, Arithmetic):
            left, right = self.value(expr.left), self.value(expr.right)
            if expr.op == "/":
                return _divide(left, right)
            return _arithmetic(expr.op, left, right)
        raise TypeError(f"not a value: {expr!r}")


_COMPARE = {
    "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
    ">": pc.greater, ">=": pc.greater_equal,
}
_CHECKED = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked, "neg": pc.negate_checked}
_FLOAT_OP = {"+": pc.add, "-": pc.subtract, "*": pc.multiply, "neg": pc.negate}


def _arithmetic(op: str, *operands):
    """`op` over numbers: float64 when an operand is a float, else _integer_op (exact in
    int64, and a row whose result overflows it computed in float64 from there on)."""
    if any(not isinstance(o, _Wide) and pa.types.is_floating(o.type) for o in operands):
        return _FLOAT_OP[op](*(_float(o) for o in operands))
    return _integer_op(op, *operands)


class _Wide:
    """An integer value some of whose rows overflowed int64. Those rows (`over`) are computed
    in float64 from there on (`approx`); the others stay exact (`exact`, null at the rows
    over). Each row is its own: whether one subscriber's value overflows never changes how
    another's is computed, so a shard of the profiles gives each row what the whole does."""
    __slots__ = ("exact", "approx", "over")

    def __init__(self, exact, approx, over: np.ndarray):
        self.exact, self.approx, self.over = exact, approx, over


def _numpy_int(value, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values with nulls as 0, validity) of an int64 array or scalar, n rows."""
    if isinstance(value, pa.Scalar):
        v = value.as_py()
        return np.full(n, 0 if v is None else v, dtype=np.int64), np.full(n, v is not None)
    valid = pc.is_valid(value)
    values = pc.fill_null(value, 0)
    return (np.asarray(values.to_numpy(), dtype=np.int64) if isinstance(values, pa.ChunkedArray)
            else values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
            np.asarray(valid.to_numpy(zero_copy_only=False) if isinstance(valid, pa.Array)
                       else valid.to_numpy(), dtype=bool))


_INT64_MIN = np.int64(-2**63)


def _wrapping(op: str, operands: list, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the int64 result wrapped round, the rows whose exact result does not fit in int64,
    the rows with every operand valid) of `op` (+ - * or neg) over int64 arrays or scalars."""
    parts = [_numpy_int(o, n) for o in operands]
    valid = np.logical_and.reduce([v for _, v in parts])
    with np.errstate(all="ignore"):
        if op == "neg":
            (a, _), = parts
            return -a, a == _INT64_MIN, valid
        (a, _), (b, _) = parts
        if op == "+":
            r = a + b
            over = ((a ^ r) & (b ^ r)) < 0
        elif op == "-":
            r = a - b
            over = ((a ^ b) & (a ^ r)) < 0
        else:
            r = a * b
            # r is a * b exactly only when dividing it by a gives b back; -1 * MIN wraps to
            # MIN, which that test cannot tell
            over = ((a != 0) & (r // np.where(a == 0, 1, a) != b)) | ((a == -1) & (b == _INT64_MIN)) \
                | ((b == -1) & (a == _INT64_MIN))
    return r, over & valid, valid


def _integer_op(op: str, *operands):
    """`op` (+ - * or neg) over int64 values (arrays, scalars or _Wide): exact in int64, and
    each row whose result overflows (or that had overflowed before) computed in float64."""
    if not any(isinstance(o, _Wide) for o in operands):
        try:
            return _CHECKED[op](*operands)
        except pa.ArrowInvalid:
            if all(isinstance(o, pa.Scalar) for o in operands):
                # constants: one value for every row
                return _FLOAT_OP[op](*(_float(o) for o in operands))
    n = next(len(o.over) if isinstance(o, _Wide) else len(o) for o in operands if not isinstance(o, pa.Scalar))
    result, over, valid = _wrapping(op, [o.exact if isinstance(o, _Wide) else o for o in operands], n)
    for o in operands:
        if isinstance(o, _Wide):
            over |= o.over
    # the rows not over as floats of their exact values, as a float cast of the plain int64
    # result gives them: a later `/` must not see a row's rounding change with another's
    floats = _FLOAT_OP[op](*(_float(o) for o in operands))
    if isinstance(floats, pa.ChunkedArray):
        floats = floats.combine_chunks()
    floats_valid = floats.is_valid().to_numpy(zero_copy_only=False)
    floats = pc.fill_null(floats, 0.0).to_numpy(zero_copy_only=False)
    approx = pa.array(np.where(over, floats, result.astype(np.float64)), pa.float64(), mask=~floats_valid)
    return _Wide(pa.array(result, pa.int64(), mask=over | ~valid), approx, over)


def _divide(left, right):
    # True division, as an operator reads `/`; dividing by zero gives null, not inf.
    left, right = _float(left), _float(right)
    quotient = pc.divide(left, right)
    return pc.if_else(pc.equal(right, 0.0), pa.scalar(None, pa.float64()), quotient)


def _is_number(values) -> bool:
    return isinstance(values, _Wide) or pa.types.is_integer(values.type) or pa.types.is_floating(values.type)


def _float(values):
    if isinstance(values, _Wide):
        return values.approx
    # Unsafe on purpose: an int64 above 2**53 rounds to the nearest float, as Python's would.
    return pc.cast(values, pa.float64(), safe=False)
