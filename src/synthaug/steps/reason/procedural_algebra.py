"""Procedural modules: arithmetic, algebra, number theory, linear algebra.

Each `make` draws parameters and computes the answer with sympy; each `verify` recomputes from
the parameters alone by another route (Python integers and fractions, substitution, brute
force), never by the function that made the answer.
"""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction
from typing import Any

import sympy as sp

from synthaug.steps.reason.procedural import Checked, Module, Problem, confirm

X = sp.Symbol("x")
_FREE = (2, 3, 5, 6, 7, 10, 11, 13, 14, 15, 17, 19, 21)
_OP_TEX = {"+": "+", "-": "-", "*": "\\times", "/": "\\div"}


def tex(value: Any) -> str:
    """LaTeX of a sympy value (natural log written \\ln, as the answer verifier reads it)."""
    return str(sp.latex(value, ln_notation=True))


def nonzero(rng: random.Random, low: int, high: int) -> int:
    """A random nonzero integer in [low, high]."""
    return rng.choice([v for v in range(low, high + 1) if v != 0])


def frac_tex(value: Fraction) -> str:
    """A fraction in LaTeX."""
    return tex(sp.Rational(value.numerator, value.denominator))


def horner(coefficients: list[int], point: Fraction) -> Fraction:
    """A polynomial's value at `point` from its coefficients (highest degree first)."""
    total = Fraction(0)
    for c in coefficients:
        total = total * point + c
    return total


def coefficients(expr: sp.Expr) -> list[int]:
    """Integer coefficients of a polynomial in x, highest degree first."""
    return [int(c) for c in sp.Poly(sp.expand(expr), X).all_coeffs()]


# -- arithmetic --------------------------------------------------------------------------------
def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]


def _fraction_step(op: str, a: Fraction, b: Fraction) -> str:
    if op in "+-":
        d = math.lcm(a.denominator, b.denominator)
        na, nb = a.numerator * d // a.denominator, b.numerator * d // b.denominator
        return (f"Over the common denominator {d}: $\\frac{{{na}}}{{{d}}} {op} "
                f"\\frac{{{nb}}}{{{d}}} = {frac_tex(_apply(op, a, b))}$.")
    if op == "*":
        return (f"Multiply numerators and denominators: ${frac_tex(a)} \\times {frac_tex(b)} = "
                f"{frac_tex(_apply(op, a, b))}$.")
    return (f"Dividing is multiplying by the reciprocal: ${frac_tex(a)} \\times "
            f"{frac_tex(1 / b)} = {frac_tex(_apply(op, a, b))}$.")


def fractions_make(rng: random.Random, level: int) -> Problem:
    top = 4 + 4 * level
    terms = [(rng.randint(1, top), rng.randint(2, top)) for _ in range(2 if level < 3 else 3)]
    ops = [rng.choice("+-" if level == 1 else "+-*/") for _ in terms[1:]]
    values = [sp.Rational(n, d) for n, d in terms]
    shown, value, steps = tex(values[0]), values[0], []
    for op, term in zip(ops, values[1:], strict=True):
        before = Fraction(int(value.p), int(value.q))
        steps.append(_fraction_step(op, before, Fraction(int(term.p), int(term.q))))
        value = {"+": value + term, "-": value - term, "*": value * term, "/": value / term}[op]
        shown = f"\\left({shown}\\right)" if len(steps) > 1 else shown
        shown = f"{shown} {_OP_TEX[op]} {tex(term)}"
    question = f"Compute ${shown}$. Give the result as a fraction in lowest terms."
    return Problem(question, tex(value), steps, {"terms": terms, "ops": ops}, value)


def fractions_verify(problem: Problem) -> Checked:
    terms = [Fraction(n, d) for n, d in problem.params["terms"]]
    value = terms[0]
    for op, term in zip(problem.params["ops"], terms[1:], strict=True):
        value = _apply(op, value, term)
    return confirm(value == Fraction(int(problem.value.p), int(problem.value.q)),
                   "recomputed with Python fractions", frac_tex(value))


def gcd_make(rng: random.Random, level: int) -> Problem:
    g = rng.randint(2, 4 + 4 * level)
    a, b = sorted((g * v for v in rng.sample(range(2, 6 + 8 * level), 2)), reverse=True)
    ask = "least common multiple" if level == 3 else "greatest common divisor"
    steps, p, q = ["Use the Euclidean algorithm."], a, b
    while q:
        steps.append(f"${p} = {p // q} \\cdot {q} + {p % q}$.")
        p, q = q, p % q
    steps.append(f"The last nonzero remainder is $\\gcd({a}, {b}) = {p}$.")
    value = int(sp.igcd(a, b))
    if level == 3:
        value = int(sp.ilcm(a, b))
        steps.append(f"$\\operatorname{{lcm}}({a}, {b}) = \\frac{{{a} \\cdot {b}}}{{{p}}} = "
                     f"{value}$.")
    return Problem(f"Find the {ask} of ${a}$ and ${b}$.", str(value), steps,
                   {"a": a, "b": b, "ask": "lcm" if level == 3 else "gcd"}, value)


def gcd_verify(problem: Problem) -> Checked:
    a, b = problem.params["a"], problem.params["b"]
    value = math.lcm(a, b) if problem.params["ask"] == "lcm" else math.gcd(a, b)
    return confirm(value == problem.value, "math.gcd / math.lcm", str(value))


def radicals_make(rng: random.Random, level: int) -> Problem:
    free = rng.choice(_FREE)
    squares = rng.sample(range(2, 4 + 3 * level), 2 if level == 3 else 1)
    radicands = [s * s * free for s in squares]
    shown = " + ".join(f"\\sqrt{{{n}}}" for n in radicands)
    steps = [f"${n} = {s}^2 \\cdot {free}$, so $\\sqrt{{{n}}} = {s}\\sqrt{{{free}}}$."
             for n, s in zip(radicands, squares, strict=True)]
    value = sum((sp.sqrt(n) for n in radicands), sp.Integer(0))
    if len(radicands) > 1:
        steps.append(f"Add the like radicals: $({' + '.join(map(str, squares))})\\sqrt{{{free}}}"
                     f" = {tex(value)}$.")
    return Problem(f"Simplify ${shown}$.", tex(value), steps, {"radicands": radicands}, value)


def radicals_verify(problem: Problem) -> Checked:
    total, free = 0, 0
    for n in problem.params["radicands"]:
        k = next(k for k in range(math.isqrt(n), 0, -1) if n % (k * k) == 0)
        total, free = total + k, n // (k * k)
    return confirm(sp.simplify(problem.value - total * sp.sqrt(free)) == 0,
                   "largest square factor found by trial division", f"{total}\\sqrt{{{free}}}")


# -- algebra -----------------------------------------------------------------------------------
def linear_make(rng: random.Random, level: int) -> Problem:
    root = sp.Rational(nonzero(rng, -12, 12), 1 if level < 3 else rng.randint(2, 5))
    a, b = nonzero(rng, -9, 9), rng.randint(-15, 15)
    c = 0 if level == 1 else rng.choice([v for v in range(-9, 10) if v not in (0, a)])
    d = a * (root + b) - c * root if level == 3 else a * root + b - c * root
    lhs = f"{a}\\left({tex(X + b)}\\right)" if level == 3 else tex(a * X + b)
    equation = f"{lhs} = {tex(c * X + d)}"
    steps = [f"Expand: ${tex(a * X + a * b)} = {tex(c * X + d)}$."] if level == 3 else []
    constant = a * b if level == 3 else b
    steps += [f"Collect the $x$ terms on the left and constants on the right: "
              f"${tex((a - c) * X)} = {tex(d - constant)}$.",
              f"Divide by ${a - c}$: $x = {tex(root)}$."]
    params = {"a": a, "b": b, "c": c, "d": str(d), "form": "a(x+b)" if level == 3 else "ax+b"}
    return Problem(f"Solve for $x$: ${equation}$.", tex(root), steps, params, root)


def linear_verify(problem: Problem) -> Checked:
    p = problem.params
    a, b, c, d, x = p["a"], p["b"], p["c"], Fraction(p["d"]), Fraction(str(problem.value))
    left = a * (x + b) if p["form"] == "a(x+b)" else a * x + b
    return confirm(a != c and left == c * x + d,
                   f"substituting x = {x} gives {left} on both sides (a unique root: {a} != {c})",
                   str(x))


def _roots_text(roots: list[sp.Expr]) -> str:
    return ", ".join(tex(r) for r in sorted(roots, key=lambda r: float(r)))


def quadratic_make(rng: random.Random, level: int) -> Problem:
    if level < 3:
        dens = (1, 1) if level == 1 else (rng.randint(1, 4), rng.randint(2, 5))
        nums = rng.sample([v for v in range(-9, 10) if v], 2)
        roots = [sp.Rational(n, d) for n, d in zip(nums, dens, strict=True)]
        poly = sp.expand((dens[0] * X - nums[0]) * (dens[1] * X - nums[1]))
        steps = [f"Factor: ${tex(poly)} = ({tex(dens[0] * X - nums[0])})"
                 f"({tex(dens[1] * X - nums[1])})$.",
                 "A product is zero when a factor is zero: "
                 + " or ".join(f"$x = {tex(r)}$" for r in roots) + "."]
    else:
        while True:
            a, b, c = rng.randint(1, 4), rng.randint(-9, 9), rng.randint(-9, 9)
            disc = b * b - 4 * a * c
            if disc > 0 and math.isqrt(disc) ** 2 != disc:
                break
        poly = a * X**2 + b * X + c
        roots = [(-b - sp.sqrt(disc)) / (2 * a), (-b + sp.sqrt(disc)) / (2 * a)]
        steps = [f"The discriminant is $b^2 - 4ac = {b * b} - {4 * a * c} = {disc}$, not a "
                 "perfect square, so use the quadratic formula.",
                 f"$x = \\frac{{-b \\pm \\sqrt{{{disc}}}}}{{2a}} = "
                 f"\\frac{{{-b} \\pm \\sqrt{{{disc}}}}}{{{2 * a}}}$."]
    answer = _roots_text(roots)
    return Problem(f"Find all real solutions of ${tex(poly)} = 0$.", answer, steps,
                   {"coefficients": coefficients(poly)}, roots)


def quadratic_verify(problem: Problem) -> Checked:
    a, b, c = problem.params["coefficients"]
    r1, r2 = problem.value
    ok = (sp.simplify(r1 + r2 + sp.Rational(b, a)) == 0
          and sp.simplify(sp.expand(r1 * r2) - sp.Rational(c, a)) == 0 and r1 != r2)
    return confirm(ok, "Vieta's formulas: the roots' sum is -b/a and product c/a",
                   _roots_text([r1, r2]))


def expand_make(rng: random.Random, level: int) -> Problem:
    a, b, c, d = (nonzero(rng, -6, 6) for _ in range(4))
    if level < 3:
        expr = (a * X + b) * (c * X + d) if level == 1 else (a * X + b) ** 2 * (X + d)
        value = sp.expand(expr)
        question = f"Expand and simplify ${tex(expr)}$."
        steps = [f"Multiply every term of one factor by every term of the other: "
                 f"${tex(expr)} = {tex(value)}$."]
        params = {"numerator": coefficients(expr), "denominator": [1]}
    else:
        r1, r2, r3 = rng.sample(range(-7, 8), 3)
        num, den = sp.expand((X - r1) * (X - r2)), sp.expand((X - r1) * (X - r3))
        value = (X - r2) / (X - r3)
        question = f"Simplify $\\frac{{{tex(num)}}}{{{tex(den)}}}$."
        steps = [f"Factor: $\\frac{{{tex((X - r1) * (X - r2))}}}{{{tex((X - r1) * (X - r3))}}}$.",
                 f"Cancel the common factor ${tex(X - r1)}$ (for $x \\ne {r1}$): "
                 f"${tex(value)}$."]
        params = {"numerator": coefficients(num), "denominator": coefficients(den)}
    return Problem(question, tex(value), steps, params, value)


def expand_verify(problem: Problem) -> Checked:
    top, bottom = problem.params["numerator"], problem.params["denominator"]
    answer_num, answer_den = (coefficients(part) for part in sp.fraction(sp.together(
        problem.value)))
    points = [Fraction(k, 3) for k in range(-9, 10)]
    usable = [p for p in points if horner(bottom, p) and horner(answer_den, p)]
    ok = all(horner(top, p) / horner(bottom, p) == horner(answer_num, p) / horner(answer_den, p)
             for p in usable)
    return confirm(ok and len(usable) > 8, f"both sides agree exactly at {len(usable)} rational "
                   "points (more than the degree: an identity)", tex(problem.value))


def factor_make(rng: random.Random, level: int) -> Problem:
    k = rng.randint(2, 5) if level == 2 else 1
    roots = rng.sample([v for v in range(-8, 9) if v], 3 if level == 3 else 2)
    poly = sp.expand(k * sp.prod([X - r for r in roots]))
    value = sp.factor(poly)
    steps = [f"Take out the common factor {k}: ${tex(poly)} = {k}({tex(sp.expand(poly / k))})$."
             ] if k > 1 else []
    if level == 3:
        steps.append(f"By the rational root theorem try divisors of {abs(int(poly.subs(X, 0)))}:"
                     f" $x = {roots[0]}$ is a root, so ${tex(X - roots[0])}$ is a factor.")
    steps.append(f"The roots are {', '.join(map(str, sorted(roots)))}, so "
                 f"${tex(poly)} = {tex(value)}$.")
    return Problem(f"Factor ${tex(poly)}$ completely over the integers.", tex(value), steps,
                   {"coefficients": coefficients(poly)}, value)


def factor_verify(problem: Problem) -> Checked:
    target = problem.params["coefficients"]
    factors = sp.Mul.make_args(problem.value)
    linear = all(sp.Poly(f.base if f.is_Pow else f, X).degree() <= 1 for f in factors)
    points = [Fraction(k) for k in range(-10, 11)]
    product = coefficients(problem.value)
    ok = linear and all(horner(target, p) == horner(product, p) for p in points)
    return confirm(ok, "the linear factors multiply back to the polynomial at 21 points",
                   tex(problem.value))


def system_make(rng: random.Random, level: int) -> Problem:
    x0, y0 = rng.randint(-9, 9), rng.randint(-9, 9)
    while True:
        a1, b1, a2, b2 = (nonzero(rng, -3 - 2 * level, 3 + 2 * level) for _ in range(4))
        if a1 * b2 - a2 * b1:
            break
    c1, c2 = a1 * x0 + b1 * y0, a2 * x0 + b2 * y0
    y = sp.Symbol("y")
    e1, e2 = tex(a1 * X + b1 * y), tex(a2 * X + b2 * y)
    steps = [f"Multiply the first equation by {a2} and the second by {a1}, then subtract: "
             f"${tex((a2 * b1 - a1 * b2) * y)} = {a2 * c1 - a1 * c2}$, so $y = {y0}$.",
             f"Substitute into the first equation: ${tex(a1 * X)} + {b1 * y0} = {c1}$, so "
             f"$x = {x0}$."]
    question = (f"Solve the system ${e1} = {c1}$ and ${e2} = {c2}$. "
                "Write the answer as $x = \\ldots, y = \\ldots$.")
    return Problem(question, f"x = {x0}, y = {y0}", steps,
                   {"rows": [[a1, b1, c1], [a2, b2, c2]]}, (x0, y0))


def system_verify(problem: Problem) -> Checked:
    x0, y0 = problem.value
    rows = problem.params["rows"]
    ok = all(a * x0 + b * y0 == c for a, b, c in rows) and \
        rows[0][0] * rows[1][1] != rows[0][1] * rows[1][0]
    return confirm(ok, "substitution into both equations (nonzero determinant: unique)",
                   f"x = {x0}, y = {y0}")


# -- number theory -------------------------------------------------------------------------------
def modpow_make(rng: random.Random, level: int) -> Problem:
    m = rng.choice([7, 9, 11, 13, 17, 19, 23, 25, 29, 31][: 3 + 3 * level])
    a, e = rng.randint(2, 50), rng.randint(10, 40 * level)
    steps, power, square = [f"${a} \\equiv {a % m} \\pmod{{{m}}}$."], 1, a % m
    bits = bin(e)[2:][::-1]
    for i, bit in enumerate(bits):
        if bit == "1":
            power = power * square % m
            steps.append(f"$2^{{{i}}}$ is in the binary expansion of {e}: multiply by "
                         f"${a}^{{{2 ** i}}} \\equiv {square}$, running product ${power}$.")
        square = square * square % m
    value = int(sp.Mod(sp.Integer(a) ** e, m))
    return Problem(f"Find the remainder when ${a}^{{{e}}}$ is divided by ${m}$.", str(value),
                   steps, {"a": a, "e": e, "m": m}, value)


def modpow_verify(problem: Problem) -> Checked:
    p = problem.params
    value = pow(p["a"], p["e"], p["m"])
    return confirm(value == problem.value, "Python's three-argument pow", str(value))


def divisors_make(rng: random.Random, level: int) -> Problem:
    primes = rng.sample([2, 3, 5, 7, 11, 13], 1 + level)
    n = math.prod(p ** rng.randint(1, 4 - level // 2) for p in primes)
    factors = sp.factorint(n)
    value = int(sp.divisor_count(n))
    shown = " \\cdot ".join(f"{p}^{{{e}}}" for p, e in sorted(factors.items()))
    steps = [f"${n} = {shown}$.",
             "A divisor picks each prime's exponent from 0 up to its power: "
             + " \\cdot ".join(f"({e} + 1)" for e in factors.values()) + f" $= {value}$."]
    return Problem(f"How many positive divisors does ${n}$ have?", str(value), steps,
                   {"n": n}, value)


def divisors_verify(problem: Problem) -> Checked:
    n = problem.params["n"]
    count = sum(2 - (d * d == n) for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return confirm(count == problem.value, "counted by trial division", str(count))


# -- linear algebra -------------------------------------------------------------------------------
def eigen_make(rng: random.Random, level: int) -> Problem:
    l1, l2 = rng.sample(range(-4 * level, 4 * level + 1), 2)
    while True:
        p = sp.Matrix(2, 2, [nonzero(rng, -3, 3) for _ in range(4)])
        if abs(p.det()) == 1:
            break
    matrix = p * sp.diag(l1, l2) * p.inv()
    t, d = matrix.trace(), matrix.det()
    lam = sp.Symbol("lambda")
    steps = [f"The characteristic polynomial is $\\lambda^2 - (\\operatorname{{tr}} A)\\lambda "
             f"+ \\det A = {tex(lam**2 - t * lam + d)}$.",
             f"It factors as ${tex(sp.factor(lam**2 - t * lam + d))}$."]
    values = sorted(sp.Matrix(matrix).eigenvals())
    return Problem(f"Find the eigenvalues of $A = {tex(matrix)}$.", _roots_text(values), steps,
                   {"matrix": [[int(v) for v in row] for row in matrix.tolist()]}, values)


def eigen_verify(problem: Problem) -> Checked:
    (a, b), (c, d) = problem.params["matrix"]
    values = [int(v) for v in problem.value]
    ok = all((a - v) * (d - v) - b * c == 0 for v in values) and sum(values) == a + d \
        and len(set(values)) == 2
    return confirm(ok, "det(A - lambda I) = 0 for each, and they sum to the trace",
                   ", ".join(map(str, sorted(values))))


def det_make(rng: random.Random, level: int) -> Problem:
    size = 2 if level == 1 else 3
    matrix = sp.Matrix(size, size, [rng.randint(-3 * level, 3 * level) for _ in range(size**2)])
    value = int(matrix.det())
    row = matrix.row(0)
    minors = [int(matrix.minor(0, j)) for j in range(size)]
    terms = " + ".join(f"({(-1) ** j * int(row[j])})({minors[j]})" for j in range(size))
    steps = [f"Expand along the first row: $\\det A = {terms} = {value}$."]
    return Problem(f"Compute the determinant of ${tex(matrix)}$.", str(value), steps,
                   {"matrix": [[int(v) for v in r] for r in matrix.tolist()]}, value)


def det_verify(problem: Problem) -> Checked:
    rows = problem.params["matrix"]
    total = 0
    for perm in itertools.permutations(range(len(rows))):
        sign = (-1) ** sum(perm[i] > perm[j] for i in range(len(perm))
                           for j in range(i + 1, len(perm)))
        total += sign * math.prod(rows[i][perm[i]] for i in range(len(perm)))
    return confirm(total == problem.value, "Leibniz formula over all permutations", str(total))


MODULES = [
    Module("fraction-arithmetic", "arithmetic", fractions_make, fractions_verify),
    Module("gcd-lcm", "arithmetic", gcd_make, gcd_verify),
    Module("simplify-radicals", "arithmetic", radicals_make, radicals_verify),
    Module("linear-equation", "algebra", linear_make, linear_verify),
    Module("quadratic-equation", "algebra", quadratic_make, quadratic_verify),
    Module("expand-simplify", "algebra", expand_make, expand_verify),
    Module("factor-polynomial", "algebra", factor_make, factor_verify),
    Module("linear-system", "algebra", system_make, system_verify),
    Module("modular-power", "number-theory", modpow_make, modpow_verify),
    Module("count-divisors", "number-theory", divisors_make, divisors_verify),
    Module("eigenvalues-2x2", "linear-algebra", eigen_make, eigen_verify),
    Module("determinant", "linear-algebra", det_make, det_verify),
]
