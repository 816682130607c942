"""The `when` expression language of SPEC §2.1: a campaign's condition over counters.

Grammar (keywords are lower case; a NAME is a counter of `[counters]`):

    condition  := or
    or         := and ('or' and)*
    and        := not ('and' not)*
    not        := 'not' not | comparison
    comparison := sum ('==' | '!=' | '<' | '<=' | '>' | '>=') sum      (not chained)
               |  '(' condition ')'
    sum        := product (('+' | '-') product)*
    product    := atom ('*' atom)*              (one side of every '*' holds no counter)
    atom       := INTEGER | NAME | '(' sum ')'

INTEGER is a non-negative decimal literal; there is no unary minus (write `0 - x`), no
division. The parser is a hand-written recursive descent over a token list, as for `where`
(engine/language/where.py): nothing ever reaches eval.

Each side of a comparison is linear in the counters: a constant plus a coefficient per
counter. `reduce()` computes that form exactly (Python integers); a side whose constant or
any coefficient is 2^32 or more in absolute value, or that names more than 16 counters, is
rejected, so that the core can evaluate `sum(a_i * c_i) + k OP 0` (the two sides moved to
one) on 128-bit integers without ever overflowing: at most 32 terms, |a_i| < 2^33,
c_i < 2^32.

Two evaluations, kept apart on purpose: `evaluate(expr, read)` walks the tree with Python
integers (the reference model's), `compile_program(expr, index)` flattens it into the core's
tables (comparisons of linear forms and a postfix and/or/not program).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Union

from engine.language.where import ExpressionError

__all__ = [
    "WhenError", "Number", "Counter", "Arithmetic", "Compare", "And", "Or", "Not", "Expr",
    "Program", "parse", "counters", "reduce", "evaluate", "compile_program",
    "OPS", "PROGRAM_AND", "PROGRAM_OR", "PROGRAM_NOT",
]

MAX_WHEN_LEN = 10_000       # a `when` longer than this is a mistake, not a campaign
MAX_DEPTH = 100             # parentheses and `not` nested deeper than this are refused
MAX_TREE_DEPTH = 300        # evaluation recurses over the tree
SIDE_LIMIT = 2**32          # |constant| and |coefficient| of a side stay below this
MAX_SIDE_COUNTERS = 16
MAX_LITERAL = 2**63 - 1

# Comparison codes, shared with the core (WHEN_EQ ... in engine/_match.pxi)
OPS = ("==", "!=", "<", "<=", ">", ">=")
# Program words: a comparison's index (>= 0), or one of these
PROGRAM_AND, PROGRAM_OR, PROGRAM_NOT = -1, -2, -3


class WhenError(ExpressionError):
    """A malformed `when`. `pos` is the 0-based offset into `text` of the problem."""


# ---------------------------------------------------------------------------- the tree

@dataclass(frozen=True)
class Number:
    value: int
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Counter:
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Arithmetic:
    op: str                      # + - *
    left: "Expr"
    right: "Expr"
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Compare:
    op: str                      # one of OPS
    left: "Expr"
    right: "Expr"
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


Expr = Union[Number, Counter, Arithmetic, Compare, And, Or, Not]
CONDITIONS = (Compare, And, Or, Not)
KEYWORDS = frozenset({"and", "or", "not"})


# ---------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class _Token:
    kind: str      # "num" "name" "op" "end"
    value: object
    pos: int


_DIGITS = re.compile(r"[0-9]+", re.ASCII)
# A counter named with '-' or '.' (config allows them) cannot appear: `a-b` is a subtraction
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "(", ")")


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c.isascii() and c.isdigit():
            m = _DIGITS.match(text, i)
            if m.end() < n and (text[m.end()] == "." or _NAME.match(text, m.end())):
                raise WhenError("not a whole number (when compares counters with non-negative integers)",
                                text, i)
            literal = m.group()
            # checked on the text first: int() of thousands of digits is refused (or slow)
            value = int(literal) if len(literal) <= 19 else MAX_LITERAL + 1
            if value > MAX_LITERAL:
                raise WhenError("integer too large", text, i)
            tokens.append(_Token("num", value, i))
            i = m.end()
        elif (m := _NAME.match(text, i)) is not None:
            tokens.append(_Token("name", m.group(), i))
            i = m.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                what = {"=": "'='; use '==' to compare", "/": "'/' (when has no division)",
                        "'": "a quote (when has no strings)", '"': "a quote (when has no strings)"}.get(c, repr(c))
                raise WhenError(f"unexpected character {what}", text, i)
            tokens.append(_Token("op", op, i))
            i += len(op)
    tokens.append(_Token("end", None, n))
    return tokens


def _describe(t: _Token) -> str:
    if t.kind == "end":
        return "end of expression"
    if t.kind == "num":
        return f"number {t.value}"
    if t.kind == "name":
        return f"'{t.value}'"
    return f"'{t.value}'"


# ---------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def at(self, kind: str, value=None) -> bool:
        t = self.tok
        return t.kind == kind and (value is None or t.value == value)

    def take(self) -> _Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def fail(self, message: str, pos: int | None = None):
        if pos is None:
            message = f"{message}, found {_describe(self.tok)}"
            pos = self.tok.pos
        raise WhenError(message, self.text, pos)

    def deeper(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"expression nested more than {MAX_DEPTH} deep", pos)

    def parse(self) -> Expr:
        if not self.text.strip():
            raise WhenError("when is empty", self.text, 0)
        expr = self.or_()
        if not self.at("end"):
            t = self.tok
            if t.kind == "op" and t.value == "(":
                self.fail("function calls are not allowed", t.pos)
            self.fail("unexpected " + _describe(t), t.pos)
        if not isinstance(expr, CONDITIONS):
            raise WhenError("when must be a condition (a comparison, 'and', 'or' or 'not')",
                            self.text, _start(expr))
        return expr

    def or_(self) -> Expr:
        left = self.and_()
        while self.at("name", "or"):
            pos = self.take().pos
            right = self.and_()
            left = Or(self.as_condition(left, "or"), self.as_condition(right, "or"), pos)
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while self.at("name", "and"):
            pos = self.take().pos
            right = self.not_()
            left = And(self.as_condition(left, "and"), self.as_condition(right, "and"), pos)
        return left

    def not_(self) -> Expr:
        if self.at("name", "not"):
            pos = self.take().pos
            self.deeper(pos)
            operand = self.not_()
            self.depth -= 1
            return Not(self.as_condition(operand, "not"), pos)
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.sum()
        t = self.tok
        if t.kind == "op" and t.value in OPS:
            self.take()
            right = self.sum()
            expr = Compare(t.value, self.as_value(left, t.value), self.as_value(right, t.value), t.pos)
            nxt = self.tok
            if nxt.kind == "op" and nxt.value in OPS:
                self.fail("comparisons cannot be chained; use 'and'", nxt.pos)
            return expr
        return left

    def sum(self) -> Expr:
        left = self.product()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            t = self.take()
            right = self.product()
            left = Arithmetic(t.value, self.as_value(left, t.value), self.as_value(right, t.value), t.pos)
        return left

    def product(self) -> Expr:
        left = self.atom()
        while self.at("op", "*"):
            t = self.take()
            right = self.atom()
            left = Arithmetic("*", self.as_value(left, "*"), self.as_value(right, "*"), t.pos)
            if _has_counter(left.left) and _has_counter(left.right):
                self.fail("a product of two counters (one side of '*' must be a number)", t.pos)
        return left

    def atom(self) -> Expr:
        t = self.tok
        if t.kind == "num":
            self.take()
            return Number(t.value, t.pos)
        if t.kind == "name":
            if t.value in KEYWORDS:
                self.fail(f"unexpected keyword '{t.value}'", t.pos)
            self.take()
            if self.at("op", "("):
                self.fail("function calls are not allowed", self.tok.pos)
            return Counter(t.value, t.pos)
        if t.kind == "op" and t.value == "(":
            self.take()
            self.deeper(t.pos)
            inner = self.or_()
            self.depth -= 1
            if not self.at("op", ")"):
                self.fail("expected ')'")
            self.take()
            return inner
        if t.kind == "op" and t.value == "-":
            self.fail("no unary minus in when (literals are non-negative; write 0 - x)", t.pos)
        self.fail("expected a number, a counter or '('")

    def as_condition(self, expr: Expr, where: str) -> Expr:
        if not isinstance(expr, CONDITIONS):
            self.fail(f"the operand of '{where}' must be a condition, not a value", _start(expr))
        return expr

    def as_value(self, expr: Expr, where: str) -> Expr:
        if isinstance(expr, CONDITIONS):
            self.fail(f"the operand of '{where}' must be a value, not a condition", _start(expr))
        return expr


def _start(expr: Expr) -> int:
    """The leftmost source position of `expr` (binary nodes record their operator's)."""
    while isinstance(expr, (Arithmetic, Compare, And, Or)):
        expr = expr.left
    return expr.pos


def _children(expr: Expr) -> tuple:
    if isinstance(expr, (Arithmetic, Compare, And, Or)):
        return (expr.left, expr.right)
    if isinstance(expr, Not):
        return (expr.operand,)
    return ()


def _walk(expr: Expr):
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_children(node))


def _has_counter(expr: Expr) -> bool:
    return any(isinstance(node, Counter) for node in _walk(expr))


def _depth(expr: Expr) -> int:
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def counters(expr: Expr) -> set[str]:
    """The counter names `expr` reads."""
    return {node.name for node in _walk(expr) if isinstance(node, Counter)}


def _continues_name(text: str, at: int) -> bool:
    """Whether the character at `at` would go on the name before it (a letter, digit or _)."""
    return at < len(text) and (text[at].isascii() and (text[at].isalnum() or text[at] == "_"))


def parse(text: str, known: Optional[Iterable[str]] = None) -> Expr:
    """Parse a `when` into its tree and check every comparison's sides (reduce()). With
    `known` (the counter names of the configuration), a name outside it is an error with a
    "did you mean". Raises WhenError naming the position of the problem."""
    if not isinstance(text, str):
        raise WhenError(f"when must be a string, not {type(text).__name__}")
    if len(text) > MAX_WHEN_LEN:
        raise WhenError(f"when is longer than {MAX_WHEN_LEN:,} characters")
    if known is not None:
        known = list(known)
        # a counter named with '.' stops the parser at its dot ("unexpected character"):
        # named first, as one named with '-' is below (helper-127)
        for k in known:
            if "." in k and not _NAME.fullmatch(k):
                found = re.search(rf"(?<![A-Za-z0-9_]){re.escape(k)}(?![A-Za-z0-9_])", text)
                if found:
                    raise WhenError(f"counter '{k}' cannot be named in when: '-' and '.' are not part of a name "
                                    "here (a-b is a subtraction); rename the counter with letters, digits and _",
                                    text, found.start())
    expr = _Parser(text).parse()
    if _depth(expr) > MAX_TREE_DEPTH:
        raise WhenError(f"when has more than {MAX_TREE_DEPTH} levels of operators", text, 0)
    if known is not None:
        known = list(known)
        for node in sorted((n for n in _walk(expr) if isinstance(n, Counter)), key=lambda n: n.pos):
            # a counter named with '-' or '.' (TOML allows "ld-in") reads here as a
            # subtraction or a stray character: say so, and never suggest such a name; also
            # when the parts are counters too (`a-b` with a, b and "a-b": it was read as a
            # subtraction without a word, helper-124)
            spelt = [k for k in known if k.startswith(node.name) and k != node.name
                     and text.startswith(k, node.pos) and not _NAME.fullmatch(k)
                     # the whole name, not the start of a longer one: `a-b2` is a - b2
                     # (helper-125: refused as 'a-b' with a, b2 and "a-b" counters)
                     and not _continues_name(text, node.pos + len(k))]
            if spelt:
                raise WhenError(f"counter '{spelt[0]}' cannot be named in when: '-' and '.' are not "
                                "part of a name here (a-b is a subtraction); rename the counter with "
                                "letters, digits and _", text, node.pos)
            if node.name not in known:
                usable = [k for k in known if _NAME.fullmatch(k)]
                hint = difflib.get_close_matches(node.name, usable, n=1)
                more = f"; did you mean '{hint[0]}'?" if hint else ""
                raise WhenError(f"unknown counter '{node.name}' (not in [counters]){more}", text, node.pos)
    for node in _walk(expr):
        if isinstance(node, Compare):
            for side in (node.left, node.right):
                _checked_side(side, text)
    return expr


# ---------------------------------------------------------------------------- linear forms

def reduce(expr: Expr) -> tuple[int, dict[str, int]]:
    """A value expression as (constant, {counter: coefficient}), exactly; zero coefficients
    are left out. The parser guarantees one side of every product holds no counter."""
    if isinstance(expr, Number):
        return expr.value, {}
    if isinstance(expr, Counter):
        return 0, {expr.name: 1}
    if isinstance(expr, Arithmetic):
        lk, lc = reduce(expr.left)
        rk, rc = reduce(expr.right)
        if expr.op == "*":
            if lc and rc:       # parse() refuses it; reduce() may be called on any tree
                raise WhenError("a product of two counters", None, None)
            scale, (k, coefs) = (lk, (rk, rc)) if not lc else (rk, (lk, lc))
            return k * scale, {n: a * scale for n, a in coefs.items() if a * scale}
        sign = 1 if expr.op == "+" else -1
        out = dict(lc)
        for n, a in rc.items():
            out[n] = out.get(n, 0) + sign * a
        return lk + sign * rk, {n: a for n, a in out.items() if a}
    raise TypeError(f"not a value: {expr!r}")


def _checked_side(side: Expr, text: str) -> tuple[int, dict[str, int]]:
    constant, coefs = reduce(side)
    pos = _start(side)
    if abs(constant) >= SIDE_LIMIT:
        raise WhenError(f"the constant of this side is {constant:,}; it must be below 2^32 in absolute value",
                        text, pos)
    for name, a in coefs.items():
        if abs(a) >= SIDE_LIMIT:
            raise WhenError(f"the coefficient of '{name}' on this side is {a:,}; it must be below 2^32 "
                            "in absolute value", text, pos)
    if len(coefs) > MAX_SIDE_COUNTERS:
        raise WhenError(f"this side of the comparison names {len(coefs)} counters; at most "
                        f"{MAX_SIDE_COUNTERS}", text, pos)
    return constant, coefs


# ---------------------------------------------------------------------------- the model's evaluation

_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def evaluate(expr: Expr, read: Callable[[str], int]) -> bool:
    """The condition's truth with Python integers; `read(name)` gives a counter's value."""
    if isinstance(expr, Compare):
        return _COMPARE[expr.op](_value(expr.left, read), _value(expr.right, read))
    if isinstance(expr, And):
        return evaluate(expr.left, read) and evaluate(expr.right, read)
    if isinstance(expr, Or):
        return evaluate(expr.left, read) or evaluate(expr.right, read)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, read)
    raise TypeError(f"not a condition: {expr!r}")


def _value(expr: Expr, read) -> int:
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, Counter):
        return read(expr.name)
    left, right = _value(expr.left, read), _value(expr.right, read)
    return left + right if expr.op == "+" else left - right if expr.op == "-" else left * right


# ---------------------------------------------------------------------------- the core's tables

@dataclass(frozen=True)
class Program:
    """A `when` flattened for the core. `comparisons[i]` is (op code, constant, terms) and means
    `sum(coef * counter) + constant OP 0`, terms being (counter index, coef) with |coef| < 2^33,
    at most 32 of them. `words` is postfix: i >= 0 pushes comparison i, PROGRAM_AND / _OR pop
    two and push one, PROGRAM_NOT negates the top. `stack` is the deepest the stack gets."""
    comparisons: tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]
    words: tuple[int, ...]
    stack: int


def compile_program(expr: Expr, index: dict[str, int]) -> Program:
    """Flatten a parsed condition; `index` maps counter names to the core's counter numbers.
    The deeper operand of `and`/`or` is emitted first (they commute and nothing has side
    effects), so the stack stays within about log2 of the number of comparisons."""
    comparisons: list = []
    words: list[int] = []

    def need(node) -> int:
        if isinstance(node, Compare):
            return 1
        if isinstance(node, Not):
            return need(node.operand)
        a, b = need(node.left), need(node.right)
        return max(a, b) if a != b else a + 1

    def emit(node) -> None:
        if isinstance(node, Compare):
            lk, lc = reduce(node.left)
            rk, rc = reduce(node.right)
            coefs = dict(lc)
            for n, a in rc.items():
                coefs[n] = coefs.get(n, 0) - a
            terms = tuple(sorted((index[n], a) for n, a in coefs.items() if a))
            words.append(len(comparisons))
            comparisons.append((OPS.index(node.op), lk - rk, terms))
        elif isinstance(node, Not):
            emit(node.operand)
            words.append(PROGRAM_NOT)
        else:
            first, second = (node.left, node.right) if need(node.left) >= need(node.right) \
                else (node.right, node.left)
            emit(first)
            emit(second)
            words.append(PROGRAM_AND if isinstance(node, And) else PROGRAM_OR)

    emit(expr)
    return Program(tuple(comparisons), tuple(words), need(expr))
