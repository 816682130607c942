"""The `when` language of SPEC §2.1 (engine/language/when.py): what parses to what, the
precedence and associativity of its operators, every refusal with its position, the linear
forms of the sides, and the program the core runs agreeing with the tree the model walks."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from engine.language import when as w
from engine.language.when import And, Arithmetic, Compare, Counter, Not, Number, Or, WhenError

NAMES = ["a", "b", "c", "ld_in", "ld_out"]


def values(**v):
    return lambda name: v[name]


# ---------------------------------------------------------------------------- precedence
def test_spec_example_tree():
    assert w.parse("ld_in >= 3 * ld_out + 2", NAMES) == Compare(
        ">=", Counter("ld_in"), Arithmetic("+", Arithmetic("*", Number(3), Counter("ld_out")), Number(2)))


def test_times_binds_tighter_than_plus_and_minus():
    assert w.parse("a + 2 * b > 0") == Compare(
        ">", Arithmetic("+", Counter("a"), Arithmetic("*", Number(2), Counter("b"))), Number(0))
    assert w.parse("a * 2 - b > 0") == Compare(
        ">", Arithmetic("-", Arithmetic("*", Counter("a"), Number(2)), Counter("b")), Number(0))


def test_minus_is_left_associative():
    # a - b - c is (a - b) - c: with a=10, b=5, c=3 it is 2, not 8
    expr = w.parse("a - b - c == 2")
    assert expr.left == Arithmetic("-", Arithmetic("-", Counter("a"), Counter("b")), Counter("c"))
    assert w.evaluate(expr, values(a=10, b=5, c=3))
    assert w.reduce(expr.left) == (0, {"a": 1, "b": -1, "c": -1})


def test_parentheses_override():
    assert w.reduce(w.parse("(a + 1) * 3 > 0").left) == (3, {"a": 3})
    assert w.reduce(w.parse("2 * (a - (b - c)) > 0").left) == (0, {"a": 2, "b": -2, "c": 2})


def test_not_binds_tighter_than_and_which_binds_tighter_than_or():
    assert w.parse("a > 1 or b > 1 and not c > 1") == Or(
        Compare(">", Counter("a"), Number(1)),
        And(Compare(">", Counter("b"), Number(1)), Not(Compare(">", Counter("c"), Number(1)))))
    assert w.parse("not a > 1 and b > 1") == And(
        Not(Compare(">", Counter("a"), Number(1))), Compare(">", Counter("b"), Number(1)))


def test_and_or_are_left_associative():
    assert w.parse("a > 1 or b > 1 or c > 1") == Or(
        Or(Compare(">", Counter("a"), Number(1)), Compare(">", Counter("b"), Number(1))),
        Compare(">", Counter("c"), Number(1)))


def test_comparison_binds_looser_than_arithmetic():
    assert w.parse("a + 1 < b * 2") == Compare(
        "<", Arithmetic("+", Counter("a"), Number(1)), Arithmetic("*", Counter("b"), Number(2)))


@pytest.mark.parametrize("text, env, expected", [
    ("a > 1 or b > 1 and c > 1", dict(a=2, b=0, c=0), True),       # or(a, and(b, c))
    ("(a > 1 or b > 1) and c > 1", dict(a=2, b=0, c=0), False),
    ("not a > 1 or b > 1", dict(a=2, b=2, c=0), True),             # or(not a, b)
    ("not (a > 1 or b > 1)", dict(a=2, b=2, c=0), False),
    ("a - b - c >= 0", dict(a=5, b=3, c=3), False),
    ("a - (b - c) >= 0", dict(a=5, b=3, c=3), True),
    ("a * 2 + 1 == 7", dict(a=3, b=0, c=0), True),
    ("a * (2 + 1) == 9", dict(a=3, b=0, c=0), True),
    ("0 - a < 0", dict(a=1, b=0, c=0), True),
    ("1 == 1", dict(a=0, b=0, c=0), True),
])
def test_evaluation(text, env, expected):
    expr = w.parse(text, NAMES)
    assert w.evaluate(expr, values(**env)) is expected
    assert _run_program(expr, env) is expected


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("text, message, column", [
    ("", "when is empty", 1),
    ("a", "when must be a condition", 1),
    ("a + 1", "when must be a condition", 1),
    ("a * b > 1", "a product of two counters", 3),
    ("(a + 1) * (b + 2) > 1", "a product of two counters", 9),
    ("a < b < c", "comparisons cannot be chained", 7),
    ("a == b != c", "comparisons cannot be chained", 8),
    ("x > 1", "unknown counter 'x'", 1),
    ("a > 1 and ld_inn > 2", "did you mean 'ld_in'?", 11),
    ("a > 4294967296", "the constant of this side is 4,294,967,296", 5),
    ("a > 4294967295", None, None),
    ("a * 4294967296 > 1", "the coefficient of 'a' on this side is 4,294,967,296", 1),
    ("0 - 4294967296 * a < 1", "the coefficient of 'a' on this side is -4,294,967,296", 1),
    ("a * 4294967295 > 1", None, None),
    ("a * 65536 * 65536 > 1", "the coefficient of 'a'", 1),
    ("a > 1 and 2", "the operand of 'and' must be a condition", 11),
    ("(a > 1) + 2 > 0", "the operand of '+' must be a value", 2),
    ("-a > 1", "no unary minus", 1),
    ("a / 2 > 1", "no division", 3),
    ("a == 1.5", "not a whole number", 6),
    ("a = 1", "use '==' to compare", 3),
    ("a > 'x'", "no strings", 5),
    ("max(a) > 1", "function calls are not allowed", 4),
    ("a > 1 b", "unexpected 'b'", 7),
    ("(a > 1", "expected ')'", 7),
    ("a > 99999999999999999999", "integer too large", 5),
    ("and > 1", "unexpected keyword 'and'", 1),
])
def test_refusals_name_the_position(text, message, column):
    if message is None:
        w.parse(text, NAMES)
        return
    with pytest.raises(WhenError) as e:
        w.parse(text, NAMES)
    assert message in str(e.value)
    assert e.value.pos == column - 1
    assert f"at column {column} of" in str(e.value)


@pytest.mark.parametrize("text, message", [
    # TOML lets a counter be called "ld-in"; when reads that as ld - in
    ("ld-in >= 3", "counter 'ld-in' cannot be named in when: '-' and '.' are not part of a name here"),
    ("ld_in >= 3", "unknown counter 'ld_in' (not in [counters]) at column 1"),     # no hint it cannot use
])
def test_a_counter_named_with_a_dash_is_said_to_be_unusable(text, message):
    with pytest.raises(WhenError) as e:
        w.parse(text, ["ld-in", "a"])
    assert message in str(e.value), str(e.value)
    assert "did you mean 'ld-in'" not in str(e.value)


def test_a_dashed_counter_is_refused_even_when_its_parts_are_counters_too():
    # helper-124: with a, b and "a-b" declared, `a-b > 0` was read as a - b without a word
    with pytest.raises(WhenError, match="counter 'a-b' cannot be named in when"):
        w.parse("a-b > 0", ["a", "b", "a-b"])
    with pytest.raises(WhenError, match="counter 'a-b' cannot be named in when"):
        w.parse("c + a-b > 0", ["a", "b", "a-b", "c"])
    # a subtraction written with spaces spells no such name: read as one
    w.parse("a - b > 0", ["a", "b", "a-b"])
    w.parse("a-b > 0", ["a", "b"])
    # nor one whose right side is a longer name (helper-125: a-b2 was refused as 'a-b')
    w.parse("a-b2 >= 1", ["a", "b", "b2", "a-b"])
    w.parse("ld-in_x > 0", ["ld", "in_x", "ld-in"])
    with pytest.raises(WhenError, match="counter 'a-b' cannot be named in when"):
        w.parse("a-b+1 > 0", ["a", "b", "a-b"])
    # one named with '.' too, where the parser stopped at the dot (helper-127)
    with pytest.raises(WhenError, match="counter 'x.y' cannot be named in when") as e:
        w.parse("a + x.y > 1", ["a", "x.y"])
    assert e.value.pos == 4
    w.parse("x > 0", ["x", "x.y"])


def test_more_than_sixteen_counters_on_a_side():
    names = [f"k{i}" for i in range(17)]
    w.parse(" + ".join(names[:16]) + " > 0", names)
    with pytest.raises(WhenError, match="names 17 counters; at most 16"):
        w.parse(" + ".join(names) + " > 0", names)
    # sixteen a side, thirty-two in all: allowed
    w.parse(" + ".join(names[:16]) + " > " + " + ".join(f"j{i}" for i in range(16)))


def test_a_counter_that_cancels_out_does_not_count():
    assert w.reduce(w.parse("a - a + b > 0").left) == (0, {"b": 1})


def test_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(WhenError, match="nested more than"):
        w.parse("(" * 200 + "a > 1" + ")" * 200)
    with pytest.raises(WhenError, match="nested more than"):
        w.parse("not " * 200 + "a > 1")
    with pytest.raises(WhenError, match="levels of operators"):
        w.parse(" or ".join(["a > 1"] * 400))
    with pytest.raises(WhenError, match="longer than"):
        w.parse("a > 1 or " * 2000 + "a > 1")


# ---------------------------------------------------------------------------- the core's program
def _run_program(expr, env) -> bool:
    """The core's evaluation (engine/_state.pxi when_true) in Python: the flat program over
    the linear forms, the stack one bit per level."""
    index = {n: k for k, n in enumerate(sorted(env))}
    order = sorted(env)
    program = w.compile_program(expr, index)
    assert program.stack <= 64
    stack = []
    for word in program.words:
        if word >= 0:
            op, constant, terms = program.comparisons[word]
            s = constant + sum(coef * env[order[k]] for k, coef in terms)
            stack.append({0: s == 0, 1: s != 0, 2: s < 0, 3: s <= 0, 4: s > 0, 5: s >= 0}[op])
        elif word == w.PROGRAM_NOT:
            stack.append(not stack.pop())
        else:
            right, left = stack.pop(), stack.pop()
            stack.append(left and right if word == w.PROGRAM_AND else left or right)
    assert len(stack) == 1
    return stack[0]


def test_the_stack_stays_shallow_for_right_nested_conditions():
    text = "a > 1"
    for _ in range(60):
        text = f"b > 1 or ({text})"
    program = w.compile_program(w.parse(text), {"a": 0, "b": 1})
    assert program.stack <= 2


@st.composite
def _values(draw, depth=0):
    if depth > 2 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(["a", "b", "c"]) | st.integers(0, 9).map(str))
    op = draw(st.sampled_from(["+", "-", "*"]))
    left, right = draw(_values(depth + 1)), draw(_values(depth + 1))
    if op == "*":
        right = str(draw(st.integers(0, 7)))
    return f"({left} {op} {right})"


@st.composite
def _conditions(draw, depth=0):
    if depth > 3 or draw(st.integers(0, 2)) == 0:
        return f"{draw(_values())} {draw(st.sampled_from(w.OPS))} {draw(_values())}"
    kind = draw(st.sampled_from(["and", "or", "not", "paren"]))
    if kind == "not":
        return f"not {draw(_conditions(depth + 1))}"
    if kind == "paren":
        return f"({draw(_conditions(depth + 1))})"
    return f"{draw(_conditions(depth + 1))} {kind} {draw(_conditions(depth + 1))}"


@settings(max_examples=300, deadline=None)
@given(_conditions(), st.integers(0, 12), st.integers(0, 12), st.integers(0, 2**32 - 1))
def test_program_agrees_with_the_tree(text, a, b, c):
    expr = w.parse(text, ["a", "b", "c"])
    env = dict(a=a, b=b, c=c)
    assert _run_program(expr, env) == w.evaluate(expr, values(**env))


def test_a_multi_line_expression_is_placed_by_line_and_column_and_quoted_on_one_line():
    # a `when` (or `where`) written as a TOML multi-line string: the CLI shows one line, so
    # the whole expression must be in it, and the place must point at what the user sees
    from engine.language.where import WhereError, parse as parse_where
    with pytest.raises(WhenError) as e:
        w.parse("a > 1 and\n    zz > 2", NAMES)
    assert e.value.pos == 14
    assert str(e.value).endswith('at line 2, column 5 of "a > 1 and\\n    zz > 2"')
    assert "\n" not in str(e.value)
    with pytest.raises(WhereError) as e:
        parse_where("arpu > 1 and\n  brand = 'x'")
    assert "at line 2, column 9 of \"arpu > 1 and\\n  brand = 'x'\"" in str(e.value)
