"""Formal proof data in the DeepSeek-Prover style, on the Coq proof assistant.

Per natural-language problem: autoformalize it into a Coq theorem statement → check that the
statement typechecks → have the model grade the statement's quality and drop the low grades
→ reject statements whose hypotheses are inconsistent (a proof of False from them) → attempt
proofs of the statement and of its negation side by side; a proof counts only when `coqc`
accepts it in the sandbox with no admitted step or axiom (`Print Assumptions` says closed).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import ClassVar, Literal

from pydantic import Field

from synthaug.errors import ParseError, SynthaugError
from synthaug.records import Record
from synthaug.steps.base import Each, EachOptions, StepOptions
from synthaug.steps.context import StepContext
from synthaug.steps.llm import Reply, Sampling, Uses
from synthaug.template import text_field
from synthaug.verify.sandbox import Limits, Sandbox

QUALITY = ("excellent", "good", "above average", "fair", "poor")
Quality = Literal["excellent", "good", "above average", "fair", "poor"]
_FORBIDDEN = re.compile(r"\b(Admitted|admit|give_up|Axiom|Axioms|Parameter|Hypothesis|"
                        r"Conjecture|Abort|Variable|Context)\b")
_BLOCK = re.compile(r"```(?:coq)?\s*\n(.*?)```", re.DOTALL)
_THEOREM = re.compile(r"(?:Theorem|Lemma|Example|Fact|Proposition)\s+[\w']+\s*:\s*(.+)",
                      re.DOTALL)
CLOSED = "Closed under the global context"
_CHECK = """import subprocess
done = subprocess.run(['coqc', '-q', 'goal.v'], capture_output=True, text=True)
print(done.returncode)
print(done.stdout)
print(done.stderr)
"""
# coqc's findlib needs its config file inside the sandbox
COQ_FILES = ("/etc/ocamlfind.conf", "/etc/ocamlfind.conf.d")


class FormalOptions(EachOptions):
    """Options of the formal-proof step."""

    backend: str = "default"
    problem_field: str = "problem"
    imports: tuple[str, ...] = ("Arith", "Lia")
    statement_sampling: Sampling = Sampling(temperature=0.0, max_tokens=200)
    grade_sampling: Sampling = Sampling(temperature=0.0, max_tokens=120)
    proof_sampling: Sampling = Sampling(temperature=0.8, max_tokens=400)
    min_quality: Quality = "above average"  # the paper drops "fair" and "poor"
    reject_inconsistent: bool = True
    attempts: int = Field(4, ge=1)  # proof attempts for the statement and for its negation
    keep_negations: bool = False  # also emit proved negations (valid theorem-proof pairs)
    sandbox: Limits = Limits(timeout=60, memory_mb=2048, output_limit=20_000)


def split_statement(statement: str) -> tuple[str, list[str], str]:
    """`forall binders, H1 -> H2 -> C` as (the `forall binders,` prefix, [H1, H2], C)."""
    text = statement.strip()
    prefix = ""
    if text.startswith("forall"):
        cut = _top_level(text, ",")
        if cut:
            prefix, text = text[:cut[0] + 1], text[cut[0] + 1:]
    arrows = _top_level(text, "->")
    parts, start = [], 0
    for at in arrows:
        parts.append(text[start:at].strip())
        start = at + 2
    parts.append(text[start:].strip())
    return prefix, parts[:-1], parts[-1]


def _top_level(text: str, token: str) -> list[int]:
    """Positions of `token` outside any parentheses, brackets or braces."""
    depth, found = 0, []
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(token, i):
            found.append(i)
    return found


def statement_of(reply: str) -> str:
    """The proposition in a formalization reply (a `Theorem name : P.` or a bare `P.`)."""
    blocks = _BLOCK.findall(reply)
    text = (blocks[0] if blocks else reply).strip()
    found = _THEOREM.search(text)
    body = (found.group(1) if found else text).strip()
    body = body.split("\nProof", 1)[0].strip()
    if not body.endswith("."):
        raise ParseError("the formal statement does not end with '.'", raw=[reply])
    return " ".join(body[:-1].split())


def proof_of(reply: str) -> str:
    """The tactic script in a proof reply, without `Proof.` and `Qed.`."""
    blocks = _BLOCK.findall(reply)
    text = (blocks[-1] if blocks else reply).strip()
    text = re.sub(r"^.*?\bProof\.", "", text, count=1, flags=re.DOTALL) \
        if "Proof." in text else text
    return re.split(r"\b(?:Qed|Defined)\.", text)[0].strip()


class FormalProof(Each[FormalOptions]):
    """Turns natural-language problems into Coq theorems with machine-checked proofs."""

    Options: ClassVar[type[StepOptions]] = FormalOptions

    def __init__(self, options: StepOptions | None = None, **kwargs: object) -> None:
        super().__init__(options, **kwargs)
        self._sandbox: Sandbox | None = None

    def requires(self) -> set[str]:
        return {self.options.problem_field}

    def provides(self) -> set[str]:
        return {"formal_statement", "proof", "quality", "kind", "messages"}

    def uses(self) -> list[Uses]:
        return [Uses(self.options.backend)]

    def prepare(self) -> None:
        if shutil.which("coqc") is None:
            raise SynthaugError("the Coq proof checker `coqc` is not installed (Debian: "
                                "apt-get install coq; or opam install coq)")
        self.sandbox()

    def sandbox(self) -> Sandbox:
        """The sandbox coqc runs in (made once; refuses if no isolation is possible)."""
        if self._sandbox is None:
            self._sandbox = Sandbox(self.options.sandbox, read_only=COQ_FILES)
        return self._sandbox

    def source(self, statement: str, proof: str | None) -> str:
        """A Coq file stating `statement` and proving it with `proof` (None: admitted)."""
        head = f"Require Import {' '.join(self.options.imports)}.\n" \
            if self.options.imports else ""
        body = f"Proof.\n{proof}\nQed.\nPrint Assumptions goal.\n" if proof is not None \
            else "Admitted.\n"
        return f"{head}Theorem goal : {statement}.\n{body}"

    async def compiles(self, statement: str, proof: str | None) -> tuple[bool, str]:
        """Whether coqc accepts the file (and, for a proof, with no assumption left)."""
        if proof is not None and _FORBIDDEN.search(proof):
            return False, "the proof admits a step or adds an axiom"
        result = await self.sandbox().run(_CHECK, files={"goal.v": self.source(statement,
                                                                                proof)})
        code, _, output = result.stdout.partition("\n")
        if not result.ok or code.strip() != "0":
            return False, (output.strip() or result.stderr or result.status)[-300:]
        if proof is not None and CLOSED not in output:
            return False, "the proof depends on assumptions"
        return True, "compiled"

    async def process(self, record: Record, ctx: StepContext) -> list[Record]:
        problem = text_field(record, self.options.problem_field)
        formal = await self._ask(ctx, record, "formalize", formalize_prompt(problem),
                                 self.options.statement_sampling)
        statement = statement_of(formal.text)
        ok, why = await self.compiles(statement, None)
        if not ok:
            ctx.drop(record, "statement does not typecheck", why)
            return []
        graded = await self._ask(ctx, record, "grade", grade_prompt(problem, statement),
                                 self.options.grade_sampling)
        quality = grade_of(graded.text)
        if QUALITY.index(quality) > QUALITY.index(self.options.min_quality):
            ctx.drop(record, f"statement quality {quality}", statement)
            return []
        replies = [formal, graded]
        if self.options.reject_inconsistent and await self._inconsistent(ctx, record,
                                                                         statement, replies):
            ctx.drop(record, "inconsistent hypotheses (False proved)", statement)
            return []
        return await self._prove(ctx, record, statement, quality, replies)

    async def _prove(self, ctx: StepContext, record: Record, statement: str, quality: str,
                     replies: list[Reply]) -> list[Record]:
        negation = f"~ ({statement})"
        for attempt in range(self.options.attempts):
            (pos, pos_reply), (neg, neg_reply) = await asyncio.gather(
                self._attempt(ctx, record, statement, attempt),
                self._attempt(ctx, record, negation, attempt))
            if pos is not None:
                return [self._record(ctx, record, statement, pos, quality, "statement",
                                     attempt, [*replies, pos_reply])]
            if neg is not None:
                ctx.drop(record, "statement is false (its negation was proved)", statement)
                if self.options.keep_negations:
                    return [self._record(ctx, record, negation, neg, quality, "negation",
                                         attempt, [*replies, neg_reply])]
                return []
        ctx.drop(record, f"no proof in {self.options.attempts} attempts", statement)
        return []

    async def _inconsistent(self, ctx: StepContext, record: Record, statement: str,
                            replies: list[Reply]) -> bool:
        prefix, hypotheses, conclusion = split_statement(statement)
        if not hypotheses or conclusion.strip("() ") == "False":
            return False  # no hypotheses, or proving False from them is the theorem itself
        absurd = f"{prefix} {' -> '.join(hypotheses)} -> False".strip()
        proof, reply = await self._attempt(ctx, record, absurd, 0)
        replies.append(reply)
        return proof is not None

    async def _attempt(self, ctx: StepContext, record: Record, goal: str,
                       attempt: int) -> tuple[str | None, Reply]:
        reply = await self._ask(ctx, record, f"prove:{goal}:{attempt}", prove_prompt(goal),
                                self.options.proof_sampling)
        proof = proof_of(reply.text)
        ok, _ = await self.compiles(goal, proof)
        return (proof if ok else None), reply

    async def _ask(self, ctx: StepContext, record: Record, salt: str, prompt: str,
                   sampling: Sampling) -> Reply:
        return await ctx.generate([{"role": "user", "content": prompt}], sampling,
                                  seed=ctx.seed_for(record, salt))

    def _record(self, ctx: StepContext, record: Record, statement: str, proof: str,
                quality: str, kind: str, attempt: int, replies: list[Reply]) -> Record:
        fields: Record = {
            self.options.problem_field: record[self.options.problem_field],
            "formal_statement": statement, "proof": proof, "quality": quality, "kind": kind,
            "messages": [{"role": "user", "content": prove_prompt(statement)},
                         {"role": "assistant", "content": f"Proof.\n{proof}\nQed."}],
            "_meta": {"verifier": {"verifier": "coq", "correct": True, "reason": CLOSED,
                                   "attempt": attempt + 1}}}
        return ctx.derive([record], fields, kind, *replies)


def formalize_prompt(problem: str) -> str:
    """Ask for the problem as one Coq theorem statement."""
    return ("Translate the math problem into a single Coq theorem statement over nat, Z or "
            "bool, using only the standard library (Arith, ZArith, Lia). Write only the line "
            "'Theorem name : <proposition>.' with explicit hypotheses as implications, no "
            f"proof.\n\nProblem: {problem}")


def grade_prompt(problem: str, statement: str) -> str:
    """Ask for a quality grade of a formalization."""
    return ("Does the Coq statement faithfully and completely capture the problem, with all "
            "of its conditions and its conclusion? Reason briefly, then end with 'Grade: G' "
            f"where G is one of: {', '.join(QUALITY)}.\n\nProblem: {problem}\n"
            f"Statement: {statement}")


def prove_prompt(goal: str) -> str:
    """Ask for a tactic proof of `goal`."""
    return ("Prove the Coq theorem. Reply with the tactic script between 'Proof.' and "
            f"'Qed.' only.\n\nTheorem goal : {goal}.")


def grade_of(reply: str) -> str:
    """The last quality grade named in a grading reply; ParseError if none."""
    lowered = reply.lower()
    stated = re.findall(r"grade\s*:\s*\**\s*(excellent|good|above average|fair|poor)", lowered)
    if stated:
        return str(stated[-1])
    found = [(lowered.rfind(grade), grade) for grade in QUALITY
             if re.search(rf"\b{grade}\b", lowered)]
    if not found:
        raise ParseError("the grader named no quality grade", raw=[reply])
    return max(found)[1]
