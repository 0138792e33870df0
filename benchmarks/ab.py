"""A/B timing of two versions of diffrast in one run on one machine (GPU timings only compare
within a run).

Two steps, because the GPU machine gets a copy of the working tree without git:

    python benchmarks/ab.py prepare main        # here: `git archive main` into .ab/main/
    python benchmarks/ab.py run -- --contexts cuda --scenarios mid_4x1024 small_1x512
                                                # on the GPU machine (carry .ab)

``run`` installs each tree under ``.ab/`` with pip (``--target``, no dependencies, no network)
into a temporary directory, then runs ``benchmarks/run.py`` with the arguments after ``--``
``--rounds`` times for the working tree (``HEAD``) and each prepared tree, alternating (each round
starting with the next version), each from its own tree. It prints, per scenario and figure, the
median over rounds of each version and the ratio to ``HEAD``, and writes every JSON line it got
to ``--out`` if given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AB_DIR = os.path.join(ROOT, ".ab")


def prepare(refs: list[str]) -> None:
    """Extract each git ``ref`` of this checkout into ``.ab/<ref>`` (slashes become ``_``)."""
    for ref in refs:
        dest = os.path.join(AB_DIR, ref.replace("/", "_"))
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        archive = subprocess.run(["git", "-C", ROOT, "archive", ref], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
        print(f"{ref} -> {os.path.relpath(dest, ROOT)}")


def _install(tree: str, target: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", target, tree], check=True,
                   stdout=subprocess.DEVNULL)


def _run_once(tree: str, site: str | None, args: list[str]) -> list[dict]:
    env = dict(os.environ)
    if site is not None:  # the prepared version first on the path, before any installed one
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "benchmarks/run.py", *args], cwd=tree, env=env,
                         capture_output=True, text=True)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not rows:
        print(f"run.py in {tree} failed ({res.returncode}):\n{res.stderr[-2000:]}", file=sys.stderr)
    return rows


def run(args: list[str], rounds: int, out: str | None) -> None:
    """Time ``HEAD`` (this tree) and every tree of ``.ab/`` alternately; print the medians."""
    names = sorted(os.listdir(AB_DIR)) if os.path.isdir(AB_DIR) else []
    if not names:
        raise SystemExit("no prepared trees in .ab/: run `ab.py prepare REF` first")
    tmp = tempfile.mkdtemp(prefix="diffrast_ab_")
    versions = [("HEAD", ROOT, None)]
    for name in names:
        site = os.path.join(tmp, name)
        _install(os.path.join(AB_DIR, name), site)
        versions.append((name, os.path.join(AB_DIR, name), site))
    got: dict = {}  # (version, scenario, context) -> figure -> [values]
    lines = []
    for r in range(rounds):
        # Each round starts with another version: the first run of a round can find the GPU
        # and the host in another state (clocks, caches) than the later ones.
        shift = r % len(versions)
        for name, tree, site in versions[shift:] + versions[:shift]:
            for row in _run_once(tree, site, args):
                lines.append({"version": name, **row})
                key = (name, row["scenario"], row.get("context"))
                for k, v in row.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "triangles":
                        got.setdefault(key, {}).setdefault(k, []).append(v)
    if out:
        with open(out, "w") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)
    cases = sorted({(s, c) for _, s, c in got})
    for scenario, context in cases:
        print(f"== {scenario} ({context}): " + " / ".join(n for n, _, _ in versions))
        base = got.get(("HEAD", scenario, context), {})
        for fig in base:
            meds = [statistics.median(got.get((n, scenario, context), {}).get(fig, [float("nan")]))
                    for n, _, _ in versions]
            ratios = " ".join(f"{m / meds[0]:.2f}x" if meds[0] and m == m else "-"
                              for m in meds[1:])
            print(f"  {fig:28s} " + " / ".join(f"{m:.3f}" for m in meds) + f"   ({ratios})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="extract git refs into .ab/ (on the machine with git)")
    pp.add_argument("refs", nargs="+")
    pr = sub.add_parser("run", help="time HEAD and the prepared trees alternately")
    pr.add_argument("--rounds", type=int, default=2)
    pr.add_argument("--out", default=None, help="write the JSON lines, tagged by version")
    pr.add_argument("run_args", nargs=argparse.REMAINDER, help="arguments of run.py, after --")
    a = p.parse_args()
    if a.cmd == "prepare":
        prepare(a.refs)
    else:
        run([x for x in a.run_args if x != "--"], a.rounds, a.out)


if __name__ == "__main__":
    main()
