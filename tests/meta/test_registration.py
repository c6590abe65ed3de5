"""Every test file runs: a test file that no meson.build names, or a doctest
suite that no meson test selects, would be skipped silently by scripts/test
and .ci/run."""

import re

from claims import ROOT

TESTS = ROOT / "tests"


def quoted_names(meson_text: str) -> set[str]:
    """The quoted strings of a meson.build, comments left out (an apostrophe
    in a comment would pair up the wrong quotes)."""
    code = "\n".join(line.split("#", 1)[0] for line in meson_text.splitlines())
    return set(re.findall(r"'([^']+)'", code))


def test_every_integration_test_file_is_registered():
    names = quoted_names((TESTS / "integration" / "meson.build").read_text())
    files = {p.stem for p in (TESTS / "integration").glob("test_*.py")}
    assert files, "no integration test files found"
    assert sorted(files - names) == [], "add them to tests/integration/meson.build"


def test_every_unit_test_file_is_compiled():
    text = (TESTS / "unit" / "meson.build").read_text()
    names = quoted_names(text)
    files = {p.name for p in (TESTS / "unit").glob("test_*.cpp")}
    assert files
    assert sorted(files - names) == [], "add them to unit_sources in tests/unit/meson.build"


def test_every_doctest_suite_is_run():
    text = (TESTS / "unit" / "meson.build").read_text()
    m = re.search(r"foreach suite : \[([^\]]*)\]", text)
    assert m, "tests/unit/meson.build no longer lists its suites in a foreach"
    run = quoted_names(m.group(1))
    used = set()
    for p in (TESTS / "unit").glob("*.cpp"):
        used |= set(re.findall(r'TEST_SUITE(?:_BEGIN)?\(\s*"([^"]+)"', p.read_text()))
    assert used
    assert sorted(used - run) == [], "add the suite to the foreach in tests/unit/meson.build"


