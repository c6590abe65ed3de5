"""Reads docs/claims.md and checks it against README.md and the tests.

docs/claims.md lists the README's factual claims, section by section:

    ## <a README heading>
    - "<the claim, copied from that section of README.md>"
      - `tests/integration/test_push.py::test_name`
      - `tests/unit/test_config.cpp::doctest case name`
    - "<a claim no test proves>"
      - not tested: <why>

check() returns one message per problem: a claim that is not (or no longer)
in that README section, a claim without a test or a reason, a test that
does not exist (Python files are parsed with ast, C++ files searched for
TEST_CASE("...")), and a README section in REQUIRED_SECTIONS with no claim.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The README sections that make claims about davsyncd's behaviour: each must
# have at least one claim in docs/claims.md.
REQUIRED_SECTIONS = (
    "Configure an account",
    "Use it",
    "D-Bus API",
    "Push (changes within seconds)",
    "Where things live",
    "How a sync works",
    "When the server says no",
)


@dataclass
class Claim:
    section: str
    text: str
    line: int
    tests: list[str] = field(default_factory=list)
    untested: str | None = None


def normalise(text: str) -> str:
    return " ".join(text.split())


def parse_claims(text: str) -> list[Claim]:
    claims: list[Claim] = []
    section = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith('- "') and line.endswith('"') and len(line) > 4:
            claims.append(Claim(section, line[3:-1], n))
        elif claims and (m := re.fullmatch(r"\s+- `([^`]+)`", line)):
            claims[-1].tests.append(m.group(1))
        elif claims and (m := re.fullmatch(r"\s+- not tested: (.+)", line)):
            claims[-1].untested = m.group(1)
    return claims


def readme_sections(readme: str) -> dict[str, str]:
    """Heading (## or ###) -> its text up to the next heading, normalised."""
    sections: dict[str, str] = {}
    current = None
    for line in readme.splitlines():
        if m := re.match(r"#{2,3} (.+)", line):
            current = m.group(1).strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return {k: normalise(v) for k, v in sections.items()}


def python_tests(path: Path) -> set[str]:
    """Test functions of a pytest file: name, and Class::name for methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test"):
                    names.add(f"{node.name}::{sub.name}")
    return names


def doctest_cases(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return set(re.findall(r'TEST_CASE\(\s*"((?:[^"\\]|\\.)*)"', text))


def test_exists(ref: str, root: Path = ROOT) -> str | None:
    """None when `ref` (path::name) names an existing test, else why not."""
    path_part, sep, name = ref.partition("::")
    if not sep or not name:
        return f"{ref}: not of the form path::test"
    path = root / path_part
    if not path.is_file():
        return f"{ref}: no file {path_part}"
    if path.suffix == ".py":
        found = python_tests(path)
    elif path.suffix == ".cpp":
        found = doctest_cases(path)
    else:
        return f"{ref}: neither a pytest nor a doctest file"
    if name not in found:
        return f"{ref}: no test {name!r} in {path_part}"
    return None


def check(claims_text: str, readme: str, root: Path = ROOT) -> list[str]:
    problems = []
    sections = readme_sections(readme)
    claims = parse_claims(claims_text)
    if not claims:
        return ["docs/claims.md lists no claim"]
    for c in claims:
        where = f"docs/claims.md:{c.line}"
        if c.section not in sections:
            problems.append(f"{where}: README.md has no section {c.section!r}")
        elif normalise(c.text) not in sections[c.section]:
            problems.append(f"{where}: not in README.md's section {c.section!r}: {c.text!r}")
        if not c.tests and not c.untested:
            problems.append(f"{where}: names no test (and gives no reason): {c.text!r}")
        for ref in c.tests:
            if why := test_exists(ref, root):
                problems.append(f"{where}: {why}")
    covered = {c.section for c in claims}
    for s in REQUIRED_SECTIONS:
        if s not in covered:
            problems.append(f"docs/claims.md: no claim from README.md's section {s!r}")
    return problems
