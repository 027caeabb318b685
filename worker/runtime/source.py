"""How tenant source is wrapped for QuickJS, and syntax checking without running it.

Scripts are compiled inside a strict-mode factory function so that each run starts from
fresh top-level state; syntax is checked against the very same wrapper so that the web
process and the worker agree on what parses and on line numbers.
"""

import re
from dataclasses import dataclass

import quickjs

# Lines the engine sees before the script's first line at run time: "function anonymous("
# and ") {" added by the Function constructor, then our "'use strict';" line.
PREFIX_LINES = 3
_LOCATION = re.compile(r"at <input>:(\d+):(\d+)")
_DEFINES_MAIN = re.compile(r"\b(?:async\s+)?function\s*\*?\s*main\s*\(|\b(?:const|let|var)\s+main\s*=|\bclass\s+main\b")


@dataclass(frozen=True)
class SyntaxProblem:
    message: str
    line: int | None
    column: int | None

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} (line {self.line}, column {self.column})"


def function_body(source: str) -> str:
    """The body compiled per script: running it defines the script's top level afresh."""
    return f"'use strict';\n{source}\n;return typeof main === 'undefined' ? undefined : main;"


# Parsing happens before anything runs, and each check script starts by throwing: whatever
# the source is, none of it executes. Three wrappers catch a source that closes the function
# it is wrapped in ("}); evil(); (function(){"): such text can balance one of them, never all.
_CHECKS = (
    "throw 0;\n(function(){{{}\n}})",
    "throw 0;\n[function(){{{}\n}}]",
    # A declaration: "}, more, function f(){" balances the two expressions but not this.
    "throw 0;\nfunction __check(){{{}\n}}",
)
_CHECK_PREFIX_LINES = 2


def check_syntax(source: str, ctx: quickjs.Context | None = None) -> SyntaxProblem | None:
    """Parse (never run) the source as our function body; None when it parses."""
    if ctx is None:
        ctx = quickjs.Context()
        ctx.set_memory_limit(32 * 1024 * 1024)
        ctx.set_time_limit(2)
    for attempt, template in enumerate(_CHECKS):
        try:
            ctx.eval(template.format(function_body(source)))
        except quickjs.JSException as exc:
            text = str(exc)
            if not text.startswith("SyntaxError"):
                continue  # our `throw 0`: it parsed
            problem = problem_from_text(text, source, _CHECK_PREFIX_LINES)
            if attempt:
                return SyntaxProblem(
                    "SyntaxError: the source closes the function it runs in (unbalanced brackets)",
                    problem.line,
                    problem.column,
                )
            return problem
    return None


def problem_from_text(text: str, source: str, prefix_lines: int = PREFIX_LINES) -> SyntaxProblem:
    first = text.splitlines()[0] if text else "SyntaxError"
    match = _LOCATION.search(text)
    if not match:
        return SyntaxProblem(first, None, None)
    line, column = int(match.group(1)) - prefix_lines, int(match.group(2))
    lines = source.splitlines() or [""]
    if line > len(lines):  # "unexpected end of input" points past our wrapper: show the end of the source
        line, column = len(lines), len(lines[-1]) + 1
    return SyntaxProblem(first, max(line, 1), column)


def defines_main(source: str) -> bool:
    """A static check: top-level code is never run outside the sandbox to find out."""
    return bool(_DEFINES_MAIN.search(source))
