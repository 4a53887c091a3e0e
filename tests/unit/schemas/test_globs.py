"""schemas.globs: the linear-time matcher equals fnmatchcase, and stays fast on any glob."""

from __future__ import annotations

import fnmatch
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditrelay.schemas.globs import MAX_GLOB_LENGTH, MAX_GLOB_STARS, Glob, GlobSet, glob_problem

ALPHABET = "ab.*"  # few letters, so that random globs and types often (nearly) match
TYPE_ALPHABET = "ab._"


@given(glob=st.text(alphabet=ALPHABET, max_size=12), text=st.text(alphabet=TYPE_ALPHABET,
                                                                    max_size=16))
@settings(max_examples=3000, deadline=None)
def test_the_matcher_equals_fnmatchcase_on_the_allowed_alphabet(glob: str, text: str) -> None:
    assert Glob.parse(glob).matches(text) is fnmatch.fnmatchcase(text, glob)


@given(glob=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.*", max_size=40),
       text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", max_size=40))
@settings(max_examples=2000, deadline=None)
def test_the_matcher_equals_fnmatchcase_on_the_whole_api_alphabet(glob: str, text: str) -> None:
    assert Glob.parse(glob).matches(text) is fnmatch.fnmatchcase(text, glob)


@pytest.mark.parametrize(("glob", "text", "expected"), [
    ("pro.atmos.*", "pro.atmos.billing.invoice_paid", True),
    ("pro.atmos.billing.*", "pro.atmos.auth.login", False),
    ("*.login_*", "pro.atmos.auth.login_failed", True),
    ("pro.atmos.auth.login", "pro.atmos.auth.login", True),
    ("pro.atmos.auth.login", "pro.atmos.auth.login2", False),
    ("*", "", True),
    ("", "", True),
    ("", "x", False),
    ("a*a", "a", False),          # head and tail may not overlap
    ("ab*ba", "aba", False),
    ("a*b*c", "axxbyyc", True),
    ("PRO.*", "pro.atmos", False),  # case-sensitive
])
def test_examples(glob: str, text: str, expected: bool) -> None:
    assert Glob.parse(glob).matches(text) is expected


def test_a_glob_set_matches_when_any_glob_does_and_none_means_every_type() -> None:
    globs = GlobSet.compile(["pro.atmos.billing.*", "*.login_failed"])
    assert globs is not None
    assert globs.matches("pro.atmos.auth.login_failed")
    assert globs.matches("pro.atmos.billing.x")
    assert not globs.matches("pro.atmos.team.joined")
    assert GlobSet.compile([]) is None


@pytest.mark.parametrize("stars", [13, 20, 5000])
def test_the_worst_globs_cost_microseconds_not_seconds(stars: int) -> None:
    # A backtracking regex took 25 s per type with 13 stars (issue #11); here the cost
    # is bounded by the text's length times the pieces, so any glob is cheap.
    glob = "*" * stars + "x"
    adversarial = "*a" * stars + "x" if stars <= 20 else glob
    text = "pro.atmos.instance.drift_detected_" + "a" * 200
    began = time.process_time()
    for candidate in (glob, adversarial):
        assert Glob.parse(candidate).matches(text) is False
    assert time.process_time() - began < 0.5


def test_the_api_bounds_name_the_problem() -> None:
    assert glob_problem("pro.atmos.*") is None
    assert glob_problem("*" * MAX_GLOB_STARS + "x") is None
    assert glob_problem("*" * (MAX_GLOB_STARS + 1)) == f"more than {MAX_GLOB_STARS} '*'"
    assert glob_problem("a" * (MAX_GLOB_LENGTH + 1)) == (
        f"longer than {MAX_GLOB_LENGTH} characters")
