"""docs/claims.md: every README claim it lists is still in the README and
names tests that exist. The checker itself is tested on bad input first, so
that a green result means something."""

from pathlib import Path

import claims

README = (claims.ROOT / "README.md").read_text(encoding="utf-8")
CLAIMS = (claims.ROOT / "docs" / "claims.md").read_text(encoding="utf-8")


def test_every_listed_claim_is_in_the_readme_and_names_existing_tests():
    problems = claims.check(CLAIMS, README)
    assert problems == [], "\n".join(problems)


def test_untested_claims_are_few_and_give_a_reason():
    listed = claims.parse_claims(CLAIMS)
    untested = [c for c in listed if c.untested]
    assert all(c.untested.strip() for c in untested)
    # A gap is allowed only as an exception, never as the rule.
    assert len(untested) * 5 <= len(listed), [c.text for c in untested]


def test_checker_finds_a_missing_test_function():
    doc = ('## Use it\n- "A bad command line exits with 2."\n'
           '  - `tests/integration/test_systemd.py::test_no_such_function`\n')
    problems = claims.check(doc, README)
    assert any("no test 'test_no_such_function'" in p for p in problems), problems


def test_checker_finds_a_missing_file_and_a_missing_doctest_case():
    doc = ('## Use it\n- "A bad command line exits with 2."\n'
           '  - `tests/integration/test_nowhere.py::test_x`\n'
           '  - `tests/unit/test_config.cpp::no such case at all`\n')
    problems = claims.check(doc, README)
    assert any("no file tests/integration/test_nowhere.py" in p for p in problems), problems
    assert any("no test 'no such case at all'" in p for p in problems), problems


def test_checker_finds_a_claim_the_readme_no_longer_makes():
    doc = ('## Use it\n- "davsyncd makes coffee."\n'
           '  - `tests/integration/test_systemd.py::test_help_documents_the_exit_status`\n')
    problems = claims.check(doc, README)
    assert any("not in README.md's section 'Use it'" in p for p in problems), problems


def test_checker_finds_a_claim_without_test_and_an_uncovered_section():
    doc = '## Use it\n- "A bad command line exits with 2."\n'
    problems = claims.check(doc, README)
    assert any("names no test" in p for p in problems), problems
    assert any("no claim from README.md's section 'Push (changes within seconds)'" in p
               for p in problems), problems


def test_checker_accepts_methods_and_doctest_cases(tmp_path: Path):
    (tmp_path / "t.py").write_text("class TestX:\n    def test_a(self):\n        pass\n")
    (tmp_path / "t.cpp").write_text('TEST_CASE("a \\"quoted\\" case") {}\n')
    assert claims.test_exists("t.py::TestX::test_a", tmp_path) is None
    assert claims.test_exists('t.cpp::a \\"quoted\\" case', tmp_path) is None
    assert claims.test_exists("t.py::test_a", tmp_path) is not None
