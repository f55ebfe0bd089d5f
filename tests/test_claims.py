"""The claims file (benchmarks/claims.py): the docs quote exactly its numbers, each claim reads a
real number from a real study workdir, and the command checks, lists and refuses bad input."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import claims

REPO = Path(__file__).resolve().parents[1]
TAG = re.compile(r"([-+−]?[\d.,]+%?)\**\s*<!--\s*claim:\s*([\w.]+)\s*-->")


def documents():
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_claims_are_well_formed():
    assert claims.CLAIMS, "no claims declared"
    ids = [c.id for c in claims.CLAIMS]
    assert len(ids) == len(set(ids))
    for c in claims.CLAIMS:
        assert c.study in claims.STUDIES and c.id.startswith(c.study + "."), c.id
        assert c.tolerance > 0 and math.isfinite(c.value), c.id
        seeds = claims.STUDIES[c.study][1]
        assert len(c.spread) == len(seeds), f"{c.id}: one value per seed {seeds}"
        # the quoted value is the seeds' mean, and every seed holds its own claim
        assert c.value == pytest.approx(sum(c.spread) / len(c.spread), abs=1e-12), c.id
        assert all(c.holds(v) for v in c.spread), c.id


def test_every_tagged_number_in_the_docs_is_its_claims_value():
    seen = set()
    for path in documents():
        for number, claim_id in TAG.findall(path.read_text()):
            c = claims.by_id(claim_id)  # an unknown id is a KeyError naming it
            assert number.replace("−", "-").lstrip("+") == c.quoted().lstrip("+"), (
                f"{path.relative_to(REPO)} quotes {number} for {claim_id}; benchmarks/claims.py has {c.quoted()}")
            seen.add(claim_id)
    # every claim is quoted somewhere (a claim nobody quotes is dead weight)
    assert seen == {c.id for c in claims.CLAIMS}, sorted({c.id for c in claims.CLAIMS} - seen)


def test_a_drifted_number_is_caught():
    c = claims.CLAIMS[0]
    text = f"a = 9{c.quoted()} <!-- claim: {c.id} -->"
    (number, claim_id), = TAG.findall(text)
    assert claim_id == c.id and number != c.quoted()


def test_list_and_bad_arguments():
    run = lambda *a: subprocess.run([sys.executable, "-m", "benchmarks.claims", *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    listed = run("--list")
    assert listed.returncode == 0
    for c in claims.CLAIMS:
        assert c.id in listed.stdout and c.quoted() in listed.stdout
    bad = run("--workdir", "nosuchstudy=/tmp")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nosuchstudy" in bad.stderr
    missing = run("--workdir", "isoflop=/no/such/dir")
    assert missing.returncode == 2 and "/no/such/dir" in missing.stderr


def test_claims_read_real_numbers_from_the_smoke_grid(smoke_grid):
    """The readers find their files and fields in a real workdir of the same study (the smoke
    preset: other numbers, so the check itself fails, with exit status 1)."""
    workdir = smoke_grid[0]
    # not in a smoke workdir: the rung (its command adds --set rung_budgets=4e12) and Approach 1's
    # held-out prediction (skipped on a 3-budget grid: its envelope needs more budgets)
    absent = {c.id for c in claims.RUNG} | {"isoflop.cpu.approach1_heldout_error"}
    rows = claims.check({"isoflop": [workdir]}, [c for c in claims.CLAIMS if c.study == "isoflop"])
    present = [r for r in rows if r["id"] not in absent]
    assert len(present) >= 8 and all(r["error"] == "" and math.isfinite(r["measured"]) for r in present), rows
    assert all(r["error"] and not r["holds"] for r in rows if r["id"] in absent), rows
    out = subprocess.run([sys.executable, "-m", "benchmarks.claims", "--study", "isoflop",
                          "--workdir", f"isoflop={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == (0 if all(r["holds"] for r in rows) else 1)
    assert lines[-1].startswith(f"claims: {sum(r['holds'] for r in rows)} of {len(rows)} checks hold")
