"""What the code methods share: code blocks from replies, and harness programs run in the sandbox.

    code_blocks(text)          fenced ```python blocks (or [PYTHON] tags) of a reply
    first_program(text)        the code a reply gives (a block, else the reply if it parses)
    find_end, rename, normalized   a generated function cut at its end, renamed, compared
    Harness                    builds programs that run untrusted code case by case, each under
                               its own alarm, and print one JSON line per case after a per-run
                               token; `rows(result)` reads them back
    open_sandbox(...)          the step's sandbox; SandboxUnavailable propagates (no model call
                               happens before it)

The harness never trusts what the code prints: its own lines start with a token the code
cannot guess, code under test has its prints captured, and a case with no line (the run was
killed at a limit) is reported with the run's status.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from synthaug.verify.sandbox import Limits, Result, Sandbox

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_TAGS = re.compile(r"\[PYTHON\](.*?)(?:\[/PYTHON\]|\Z)", re.S)


def code_blocks(text: str) -> list[str]:
    """The code blocks of a reply: ```python fences, else [PYTHON] tags; stripped, non-empty."""
    found = [m.group(1) for m in _FENCE.finditer(text)] or \
        [m.group(1) for m in _TAGS.finditer(text)]
    return [block.strip("\n") for block in found if block.strip()]


def parses(source: str) -> bool:
    """True when `source` is syntactically valid Python."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def first_program(text: str) -> str | None:
    """The program a reply gives: its first code block that parses, else the whole reply when
    it parses as Python, else its first code block (left for execution to reject)."""
    blocks = code_blocks(text)
    for block in blocks:
        if parses(block):
            return block
    if not blocks and text.strip() and parses(text.strip()):
        return text.strip()
    return blocks[0] if blocks else None


def find_end(text: str) -> str | None:
    """The function definition `text` starts with, cut at its first unindented line after the
    header (what follows a generated function), or None when that does not parse."""
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i] and lines[i][0] not in " \t":
            lines = lines[:i]
            break
    found = "\n".join(lines).rstrip()
    return found if parses(found) else None


def rename(source: str, name: str) -> str:
    """`source` with its first function definition renamed `name` (`def f7(` -> `def f(`)."""
    return re.sub(r"^def \w+\(", f"def {name}(", source, count=1, flags=re.M)


def normalized(source: str) -> str:
    """A program's text without comments or formatting differences (for deduplication)."""
    try:
        return ast.unparse(ast.parse(source))
    except (SyntaxError, ValueError):
        return " ".join(source.split())


def open_sandbox(limits: Limits, unsafe_local: bool) -> Sandbox:
    """The sandbox a step runs code in; raises SandboxUnavailable where none can run."""
    return Sandbox(limits, unsafe_local=unsafe_local)


# The harness's own code, shared by every program below. `_guarded` runs one case under a
# wall-clock alarm with the case's prints captured; `_show` is repr with sets sorted (stable
# across runs whatever the hash seed).
_PRELUDE = r'''
import ast, contextlib, io, json, signal, sys
_OUT, _MARK = sys.stdout, __MARK__
PAYLOAD = json.loads(open("payload.json", encoding="utf-8").read())

class _Timeout(BaseException):
    pass

def _alarm(signum, frame):
    raise _Timeout()

signal.signal(signal.SIGALRM, _alarm)

def _emit(row):
    _OUT.write("\n" + _MARK + json.dumps(row) + "\n")
    _OUT.flush()

def _guarded(seconds, work):
    sink = io.StringIO()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with contextlib.redirect_stdout(sink):
            return "ok", work()
    except _Timeout:
        return "timeout", "timed out after %s s" % seconds
    except AssertionError as exc:
        return "failed", ("AssertionError: %s" % exc)[:800]
    except BaseException as exc:
        return "error", ("%s: %s" % (type(exc).__name__, exc))[:800]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

def _show(v):
    if isinstance(v, (set, frozenset)):
        body = ", ".join(sorted(_show(x) for x in v))
        if isinstance(v, set):
            return "{" + body + "}" if body else "set()"
        return "frozenset({" + body + "})" if body else "frozenset()"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_show(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(_show(k) + ": " + _show(x) for k, x in v.items()) + "}"
    return repr(v)

import typing
_TYPING = {n: getattr(typing, n) for n in ("List", "Set", "Dict", "Tuple", "Optional")}

def _load(source, name, space):
    try:
        code = compile(source, name, "exec")
    except (SyntaxError, ValueError) as exc:
        return "compile error", "%s: %s" % (type(exc).__name__, exc)
    return _guarded(PAYLOAD["timeout"], lambda: exec(code, space))
'''

# Case2Code: call one function on each input the model wrote (`__case__(...)` expressions).
_CALL_CASES = r'''
_space = {"__name__": "case2code"}
_status, _found = _load(PAYLOAD["code"], "function.py", _space)
if _status != "ok":
    _emit({"setup": _status, "error": _found})
    sys.exit(0)
_fn = _space[PAYLOAD["name"]]

def _case(source):
    args, kwargs = eval(source, {"__case__": lambda *a, **k: (a, k)})
    # the input is written down before the call: a function that changes its arguments
    # cannot change the recorded input (each case is evaluated afresh, so none shares objects)
    shown = [_show(v) for v in args] + [k + "=" + _show(v) for k, v in kwargs.items()]
    call = PAYLOAD["name"] + "(" + ", ".join(shown) + ")"
    return call, _show(_fn(*args, **kwargs))

for _i, _source in enumerate(PAYLOAD["cases"]):
    _status, _found = _guarded(PAYLOAD["timeout"], lambda: _case(_source))
    if _status == "ok":
        _emit({"case": _i, "status": "ok", "call": _found[0], "output": _found[1]})
    else:
        _emit({"case": _i, "status": _status, "error": _found})
'''

# Puzzles, solving: each g() in a namespace of its own (no puzzle in it); its answer as text.
_RUN_SOLUTIONS = r'''
def _answer(source):
    space = {"__name__": "solution", **_TYPING}
    exec(compile(source, "g.py", "exec"), space)
    text = _show(space["g"]())
    try:  # a plain value (numbers, strings, lists...), nothing that fakes ==
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError("the answer is not a plain value: " + text[:200]) from None
    return text

for _i, _source in enumerate(PAYLOAD["solutions"]):
    _status, _found = _guarded(PAYLOAD["timeout"], lambda: _answer(_source))
    if _status == "ok":
        _emit({"case": _i, "status": "ok", "answer": _found})
    else:
        _emit({"case": _i, "status": _status, "error": _found})
'''

# Puzzles, checking: f(answer) for each answer text, with the answer's type checked first.
_CHECK_ANSWERS = r'''
_BASE = {"int": int, "str": str, "float": float, "bool": bool}

def _typed(value, spec):
    if spec in _BASE:
        return type(value) is _BASE[spec]
    inner = spec[spec.index("[") + 1:-1]
    return isinstance(value, list) and all(_typed(x, inner) for x in value)

_space = {"__name__": "puzzle", **_TYPING}
_status, _found = _load(PAYLOAD["puzzle"], "f.py", _space)
if _status != "ok":
    _emit({"setup": _status, "error": _found})
    sys.exit(0)
_f = _space["f"]

def _check(text):
    value = ast.literal_eval(text)
    typed = _typed(value, PAYLOAD["type"])
    result = _f(value)
    return {"typed": typed, "true": result is True, "truthy": bool(result)}

for _i, _text in enumerate(PAYLOAD["answers"]):
    _status, _found = _guarded(PAYLOAD["timeout"], lambda: _check(_text))
    if _status == "ok":
        _emit({"case": _i, "status": "ok", **_found})
    else:
        _emit({"case": _i, "status": _status, "error": _found})
'''

# Unit tests: the solution, then each test statement on its own, in one namespace.
_UNIT_TESTS = r'''
_space = {"__name__": "solution"}
for _name, _source in (("solution.py", PAYLOAD["solution"]), ("setup.py", PAYLOAD["prelude"])):
    _status, _found = _load(_source, _name, _space)
    if _status != "ok":
        _emit({"setup": "compile error" if _status == "compile error" else "runtime error",
               "where": _name, "error": _found})
        sys.exit(0)

for _i, _source in enumerate(PAYLOAD["tests"]):
    _code = compile(_source, "test_%d.py" % (_i + 1), "exec")
    _status, _found = _guarded(PAYLOAD["timeout"], lambda: exec(_code, _space))
    _emit({"case": _i, "status": "passed" if _status == "ok" else _status,
           "error": None if _status == "ok" else _found})
'''

PROGRAMS = {"call_cases": _CALL_CASES, "run_solutions": _RUN_SOLUTIONS,
            "check_answers": _CHECK_ANSWERS, "unit_tests": _UNIT_TESTS}


@dataclass
class Run:
    """One harness run: per-case rows (in case order), a setup failure, the sandbox result."""

    rows: list[dict[str, Any]]
    setup: dict[str, Any] | None
    result: Result

    def lost(self) -> str:
        """Why cases without a row have none (the run stopped before reaching them)."""
        if self.result.status in ("ok", "error"):
            return "program exited before the case ran"
        return f"run stopped: {self.result.status}"


@dataclass
class Harness:
    """Builds and runs one kind of harness program; `mark` is a per-instance secret token."""

    kind: str
    mark: str = field(default_factory=lambda: f"@@synthaug-{secrets.token_hex(8)}@@ ")

    def program(self) -> str:
        """The harness program text."""
        return _PRELUDE.replace("__MARK__", repr(self.mark)) + PROGRAMS[self.kind]

    async def run(self, box: Sandbox, count: int, **payload: Any) -> Run:
        """Run the harness on `payload` (a `timeout` per case and the kind's fields); `count`
        cases are expected."""
        result = await box.run(self.program(), files={"payload.json": json.dumps(payload)})
        found: dict[int, dict[str, Any]] = {}
        setup = None
        for line in result.stdout.splitlines():
            if not line.startswith(self.mark):
                continue
            row = json.loads(line[len(self.mark):])
            if "setup" in row:
                setup = row
            else:
                found[int(row["case"])] = row
        run = Run([], setup, result)
        missing = {"status": "timeout" if result.status == "timeout" else "lost",
                   "error": run.lost()}
        run.rows = [found.get(i, {"case": i, **missing}) for i in range(count)]
        return run
