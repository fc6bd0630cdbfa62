"""Procedural modules: calculus and probability.

Answers come from sympy (`diff`, `manualintegrate`, `integrate`, `limit`, binomials);
verification takes another route: mpmath's numeric derivative, limit and quadrature,
differentiating an antiderivative back, and brute-force enumeration of dice, cards and
arrangements. Integrals are explained with sympy's own integration steps (`integral_steps`).
"""

from __future__ import annotations

import importlib
import itertools
import random
from collections.abc import Callable
from math import comb
from typing import Any

import sympy as sp
from sympy.integrals.manualintegrate import integral_steps, manualintegrate

from synthaug.steps.reason.procedural import Checked, Module, Problem, confirm
from synthaug.steps.reason.procedural_algebra import X, nonzero, tex

_DIGITS = 40


def _mpmath() -> Any:
    """mpmath, sympy's numeric engine (verifiers work in `mpmath.workdps(_DIGITS)`)."""
    return importlib.import_module("mpmath")


def _numeric(expr: sp.Expr) -> Callable[[Any], Any]:
    return sp.lambdify(X, expr, "mpmath")  # type: ignore[no-any-return]


def _close(a: Any, b: Any, tolerance: float = 1e-20) -> bool:
    return bool(abs(a - b) <= tolerance * max(1, abs(b)))


# -- calculus --------------------------------------------------------------------------------------
def _term(rng: random.Random, level: int) -> sp.Expr:
    c, k, n = nonzero(rng, -7, 7), rng.randint(2, 5), rng.randint(2, 6)
    kinds: list[sp.Expr] = [c * X**n, c * X]
    if level >= 2:
        kinds += [c * sp.sin(k * X), c * sp.cos(k * X), c * sp.exp(k * X), c * sp.log(X)]
    if level == 3:
        kinds = [c * X**n * sp.sin(k * X), c * sp.exp(k * X**2), c * sp.log(X**2 + k),
                 c * X * sp.exp(k * X), c * sp.sin(X**2 + k)]
    return rng.choice(kinds)


def _rule(term: sp.Expr) -> str:
    """The differentiation rule a term needs."""
    if term.is_polynomial(X):
        return "power rule"
    core = term.as_independent(X, as_Add=False)[1]
    if isinstance(core, sp.Mul):
        return "product rule"
    inner = core.args[0]
    return "chain rule" if inner.is_Add or not inner.is_polynomial(X) or \
        sp.degree(inner, X) > 1 else "standard derivative and the chain rule"


def derivative_make(rng: random.Random, level: int) -> Problem:
    terms = list(dict.fromkeys(_term(rng, level) for _ in range(2 if level == 3 else 3)))
    f = sp.Add(*terms)
    value = sp.diff(f, X)
    steps = ["Differentiate term by term."] + [
        f"$\\frac{{d}}{{dx}}\\left[{tex(t)}\\right] = {tex(sp.diff(t, X))}$ ({_rule(t)})."
        for t in terms]
    return Problem(f"Find $\\frac{{d}}{{dx}}\\left[{tex(f)}\\right]$.", tex(value), steps,
                   {"function": sp.srepr(f)}, value)


def derivative_verify(problem: Problem) -> Checked:
    mpmath = _mpmath()
    f = _numeric(sp.parse_expr(problem.params["function"]))
    answer = _numeric(problem.value)
    with mpmath.workdps(_DIGITS):
        points = [mpmath.mpf("0.7"), mpmath.mpf("1.3"), mpmath.mpf("2.1")]
        ok = all(_close(mpmath.diff(f, p), answer(p), 1e-25) for p in points)
    return confirm(ok, "mpmath's numeric derivative agrees at x = 0.7, 1.3, 2.1",
                   tex(problem.value))


_RULE_NAMES = {
    "AddRule": "integrate term by term", "ConstantTimesRule": "take the constant out",
    "PowerRule": "power rule", "ExpRule": "exponential rule", "SinRule": "sine rule",
    "CosRule": "cosine rule", "ReciprocalRule": "$\\int \\frac{du}{u} = \\ln|u|$",
    "ConstantRule": "constant rule", "RewriteRule": "rewrite the integrand",
}


def integration_steps(rule: Any) -> list[str]:
    """sympy's integration rule tree as solution lines, outermost first."""
    name = type(rule).__name__
    if name == "AlternativeRule":
        return integration_steps(rule.alternatives[0])
    integral = f"$\\int {tex(rule.integrand)}\\,d{tex(rule.variable)} = {tex(rule.eval())}$"
    if name == "URule":
        head = f"Substitute $u = {tex(rule.u_func)}$: {integral}."
        return [head, *integration_steps(rule.substep)]
    if name == "PartsRule":
        head = (f"Integrate by parts with $u = {tex(rule.u)}$ and $dv = {tex(rule.dv)}\\,dx$: "
                f"{integral}.")
        return [head, *integration_steps(rule.v_step), *integration_steps(rule.second_step)]
    children = getattr(rule, "substeps", None) or (
        [rule.substep] if getattr(rule, "substep", None) is not None else [])
    head = f"{_RULE_NAMES.get(name, name)}: {integral}."
    return [head[0].upper() + head[1:]] + [line for c in children
                                           for line in integration_steps(c)]


def _integrand(rng: random.Random, level: int) -> sp.Expr:
    c, k, n = nonzero(rng, -6, 6), rng.randint(2, 5), rng.randint(1, 5)
    if level == 1:
        return sp.Add(*(nonzero(rng, -9, 9) * X**p for p in rng.sample(range(0, 5), 3)))
    if level == 2:
        return rng.choice([c * sp.exp(k * X), c * sp.sin(k * X), c * sp.cos(k * X),
                           sp.Rational(c) / (X + k)]) + nonzero(rng, -5, 5) * X**n
    return rng.choice([c * X * sp.exp(k * X), c * X * sp.cos(k * X), c * X * sp.sin(k * X),
                       2 * k * X * sp.exp(k * X**2), c * n * X**(n - 1) * (X**n + k)**2])


def antiderivative_make(rng: random.Random, level: int) -> Problem:
    f = _integrand(rng, level)
    antiderivative = manualintegrate(f, X)
    steps = [*integration_steps(integral_steps(f, X)), "Add the constant of integration $C$."]
    return Problem(f"Find $\\int {tex(f)}\\,dx$.", f"{tex(antiderivative)} + C", steps,
                   {"integrand": sp.srepr(f)}, antiderivative)


def antiderivative_verify(problem: Problem) -> Checked:
    f = sp.parse_expr(problem.params["integrand"])
    ok = sp.simplify(sp.diff(problem.value, X) - f) == 0
    return confirm(ok, "differentiating the antiderivative gives back the integrand",
                   f"{tex(problem.value)} + C")


def definite_make(rng: random.Random, level: int) -> Problem:
    k = rng.randint(1, 4)
    if level == 1:
        f, low, high = _integrand(rng, 1), sp.Integer(rng.randint(-3, 0)), sp.Integer(
            rng.randint(1, 3))
    elif level == 2:
        f, low, high = rng.choice([(nonzero(rng, -5, 5) * sp.sin(k * X), 0, sp.pi / k),
                                   (nonzero(rng, -5, 5) * sp.exp(k * X), 0, 1),
                                   (sp.Integer(nonzero(rng, -5, 5)) / (X + k), 0, k)])
    else:
        f, low, high = rng.choice([(X * sp.exp(k * X), 0, 1), (X * sp.cos(X), 0, sp.pi / 2),
                                   (X**2 * sp.exp(X), 0, 1)])
    antiderivative = sp.simplify(manualintegrate(f, X))
    value = sp.nsimplify(sp.simplify(sp.integrate(f, (X, low, high))))
    steps = [f"An antiderivative is $F(x) = {tex(antiderivative)}$.",
             f"$F({tex(high)}) - F({tex(low)}) = {tex(value)}$."]
    question = f"Evaluate $\\int_{{{tex(low)}}}^{{{tex(high)}}} {tex(f)}\\,dx$."
    return Problem(question, tex(value), steps,
                   {"integrand": sp.srepr(f), "low": sp.srepr(low), "high": sp.srepr(high)},
                   value)


def definite_verify(problem: Problem) -> Checked:
    mpmath = _mpmath()
    p = problem.params
    low, high = (sp.parse_expr(p[b]) for b in ("low", "high"))
    with mpmath.workdps(_DIGITS):
        area = mpmath.quad(_numeric(sp.parse_expr(p["integrand"])),
                           [mpmath.mpf(str(sp.N(b, _DIGITS))) for b in (low, high)])
        ok = _close(area, mpmath.mpf(str(sp.N(problem.value, _DIGITS))))
    return confirm(ok, "mpmath quadrature agrees", tex(problem.value))


def limit_make(rng: random.Random, level: int) -> Problem:
    a, b, k, m = nonzero(rng, -6, 6), nonzero(rng, -6, 6), rng.randint(2, 6), rng.randint(1, 5)
    zero, sine = sp.Integer(0), "Use $\\lim_{u \\to 0} \\frac{\\sin u}{u} = 1$ with $u = %s$."
    choices = {
        1: [(sp.expand((X - a) * (X + b)) / (X - a), sp.Integer(a),
             f"Factor the numerator as ${tex((X - a) * (X + b))}$, cancel ${tex(X - a)}$ and "
             f"substitute $x = {a}$ into ${tex(X + b)}$.")],
        2: [(sp.sin(k * X) / (m * X), zero, sine % tex(k * X)),
            ((sp.exp(k * X) - 1) / (m * X), zero,
             f"Use $\\lim_{{u \\to 0}} \\frac{{e^u - 1}}{{u}} = 1$ with $u = {tex(k * X)}$."),
            ((k * X**2 + a) / (m * X**2 + X), sp.oo,
             "Divide the numerator and denominator by $x^2$; the lower-order terms vanish.")],
        3: [((1 + sp.Integer(a) / X) ** (m * X), sp.oo,
             f"Use $\\lim_{{x \\to \\infty}} (1 + \\frac{{a}}{{x}})^x = e^a$ with $a = {a}$, "
             f"raised to the power {m}."),
            ((1 - sp.cos(k * X)) / X**2, zero,
             f"Use $1 - \\cos u \\sim \\frac{{u^2}}{{2}}$ as $u \\to 0$ with "
             f"$u = {tex(k * X)}$.")],
    }
    expr, point, hint = rng.choice(choices[level])
    value = sp.limit(expr, X, point)
    question = f"Evaluate $\\lim_{{x \\to {tex(point)}}} {tex(expr)}$."
    return Problem(question, tex(value), [hint, f"The limit is ${tex(value)}$."],
                   {"expression": sp.srepr(expr), "point": sp.srepr(point)}, value)


def limit_verify(problem: Problem) -> Checked:
    mpmath = _mpmath()
    point = sp.parse_expr(problem.params["point"])
    f = _numeric(sp.parse_expr(problem.params["expression"]))
    with mpmath.workdps(_DIGITS):
        numeric = mpmath.limit(f, mpmath.inf if point == sp.oo else mpmath.mpf(int(point)))
        ok = _close(numeric, mpmath.mpf(str(sp.N(problem.value, _DIGITS))), 1e-8)
    return confirm(ok, "mpmath's numeric limit (Richardson extrapolation) agrees",
                   tex(problem.value))


# -- probability ---------------------------------------------------------------------------------
def dice_make(rng: random.Random, level: int) -> Problem:
    n = 2 if level == 1 else rng.randint(2, 3) if level == 2 else rng.randint(3, 4)
    target = rng.randint(n + 1, 6 * n - 1)
    at_least = level > 1
    t = sp.Symbol("t")
    poly = sp.Poly(sp.expand(sum(t**i for i in range(1, 7)) ** n), t)
    counts = {s: int(poly.coeff_monomial(t**s)) for s in range(n, 6 * n + 1)}
    favorable = sum(c for s, c in counts.items() if (s >= target if at_least else s == target))
    value = sp.Rational(favorable, 6**n)
    event = f"at least {target}" if at_least else f"exactly {target}"
    steps = [f"There are $6^{n} = {6**n}$ equally likely outcomes.",
             f"The number of outcomes with sum {event} is the sum of the matching coefficients "
             f"of $(t + t^2 + \\cdots + t^6)^{n}$: {favorable}.",
             f"The probability is $\\frac{{{favorable}}}{{{6**n}}} = {tex(value)}$."]
    return Problem(f"{n} fair six-sided dice are rolled. What is the probability that the sum "
                   f"is {event}?", tex(value), steps,
                   {"dice": n, "target": target, "at_least": at_least}, value)


def dice_verify(problem: Problem) -> Checked:
    p = problem.params
    rolls = list(itertools.product(range(1, 7), repeat=p["dice"]))
    hits = sum((sum(r) >= p["target"]) if p["at_least"] else (sum(r) == p["target"])
               for r in rolls)
    value = sp.Rational(hits, len(rolls))
    return confirm(value == problem.value, f"enumerated all {len(rolls)} rolls", tex(value))


_RANKS = "A23456789TJQK"
_EVENTS: dict[str, tuple[str, Callable[[int], int], Callable[[list[str]], bool]]] = {
    "aces": ("every card is an ace", lambda k: comb(4, k), lambda h: all(c[0] == "A" for c in h)),
    "suit": ("all cards are of the same suit", lambda k: 4 * comb(13, k),
             lambda h: len({c[1] for c in h}) == 1),
    "one-ace": ("exactly one card is an ace", lambda k: 4 * comb(48, k - 1),
                lambda h: sum(c[0] == "A" for c in h) == 1),
    "no-face": ("no card is a jack, queen or king", lambda k: comb(40, k),
                lambda h: all(c[0] not in "JQK" for c in h)),
    "some-heart": ("at least one card is a heart", lambda k: comb(52, k) - comb(39, k),
                   lambda h: any(c[1] == "h" for c in h)),
}


def cards_make(rng: random.Random, level: int) -> Problem:
    k = {1: 2, 2: 2, 3: 3}[level]
    name = rng.choice(sorted(_EVENTS) if level > 1 else ["aces", "suit", "no-face"])
    text, count, _ = _EVENTS[name]
    favorable, total = count(k), comb(52, k)
    value = sp.Rational(favorable, total)
    steps = [f"There are $\\binom{{52}}{{{k}}} = {total}$ equally likely hands.",
             f"Hands where {text}: {favorable}.",
             f"The probability is $\\frac{{{favorable}}}{{{total}}} = {tex(value)}$."]
    return Problem(f"{k} cards are drawn at random without replacement from a standard 52-card "
                   f"deck. What is the probability that {text}?", tex(value), steps,
                   {"cards": k, "event": name}, value)


def cards_verify(problem: Problem) -> Checked:
    deck = [r + s for r in _RANKS for s in "shdc"]
    hands = list(itertools.combinations(deck, problem.params["cards"]))
    test = _EVENTS[problem.params["event"]][2]
    value = sp.Rational(sum(test(list(h)) for h in hands), len(hands))
    return confirm(value == problem.value, f"enumerated all {len(hands)} hands", tex(value))


_WORDS = ("LEVEL", "APPLE", "BANANA", "LETTER", "PEPPER", "COFFEE", "ALPACA", "SUCCESS",
          "BALLOON", "RABBIT")


def counting_make(rng: random.Random, level: int) -> Problem:
    if level < 3:
        word = rng.choice(_WORDS[:4] if level == 1 else _WORDS)
        letters = {c: word.count(c) for c in sorted(set(word))}
        value = sp.factorial(len(word)) / sp.prod([sp.factorial(v) for v in letters.values()])
        repeats = ", ".join(f"{c} {v} times" for c, v in letters.items() if v > 1)
        steps = [f"{len(word)} letters give ${len(word)}!$ orders; repeated letters ({repeats}) "
                 "make orders identical.",
                 f"Divide by the factorials of the repeats: ${tex(value)}$."]
        return Problem(f"How many distinct arrangements of the letters of {word} are there?",
                       tex(value), steps, {"word": word}, int(value))
    women, men, size = rng.randint(3, 6), rng.randint(3, 6), rng.randint(3, 4)
    value = comb(women + men, size) - comb(women, size) - comb(men, size)
    steps = [f"All committees: $\\binom{{{women + men}}}{{{size}}} = {comb(women + men, size)}$.",
             f"Remove those of only women ({comb(women, size)}) or only men "
             f"({comb(men, size)}): {value}."]
    return Problem(f"A committee of {size} is chosen from {women} women and {men} men. How many "
                   "committees include at least one woman and at least one man?", str(value),
                   steps, {"women": women, "men": men, "size": size}, value)


def counting_verify(problem: Problem) -> Checked:
    p = problem.params
    if "word" in p:
        count = len(set(itertools.permutations(p["word"])))
    else:
        people = ["w"] * p["women"] + ["m"] * p["men"]
        count = sum(len(set(c)) == 2 for c in itertools.combinations(people, p["size"]))
    return confirm(count == problem.value, "enumerated by brute force", str(count))


MODULES = [
    Module("derivative", "calculus", derivative_make, derivative_verify),
    Module("antiderivative", "calculus", antiderivative_make, antiderivative_verify),
    Module("definite-integral", "calculus", definite_make, definite_verify),
    Module("limit", "calculus", limit_make, limit_verify),
    Module("dice", "probability", dice_make, dice_verify),
    Module("cards", "probability", cards_make, cards_verify),
    Module("counting", "probability", counting_make, counting_verify),
]
