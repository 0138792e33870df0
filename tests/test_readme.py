"""Every Python code block of README.md runs as written, on the CPU.

Each ```python block runs on its own in a fresh interpreter (so it must import what it uses),
with no GPU (``CUDA_VISIBLE_DEVICES=''``) and no display, in an empty folder. A block that cannot
run there carries a visible mark on the line before its fence, ``<!-- not run: REASON -->``; the
reason must say why.
"""
import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")


def code_blocks(text):
    """The fenced blocks of Markdown ``text``: ``(line, lang, code, not_run)`` with the 1-based
    line of the opening fence, the block's language, its code (dedented by the fence's
    indentation) and the reason of a ``<!-- not run: ... -->`` mark on the line before the fence
    (None without one)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start = len(m["indent"]), i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = "\n".join(line[indent:] for line in lines[start + 1:i])
        prev = lines[start - 1] if start > 0 else ""
        mark = NOT_RUN.match(prev)
        blocks.append((start + 1, m["lang"], body + "\n", mark["reason"] if mark else None))
        i += 1
    return blocks


with open(README, encoding="utf-8") as f:
    BLOCKS = [b for b in code_blocks(f.read()) if b[1] == "python"]


def test_the_extractor_sees_fences_marks_and_indented_blocks():
    text = ("text\n```python\nx = 1\n```\n<!-- not run: needs CUDA -->\n```python\ncuda()\n```\n"
            "- item\n\n  ```python\n  y = 2\n  ```\n```sh\nls\n```\n")
    assert code_blocks(text) == [(2, "python", "x = 1\n", None),
                                 (6, "python", "cuda()\n", "needs CUDA"),
                                 (11, "python", "y = 2\n", None),
                                 (14, "sh", "ls\n", None)]


def test_most_python_blocks_run():
    assert len(BLOCKS) >= 3
    skipped = [b for b in BLOCKS if b[3] is not None]
    assert all(reason for _, _, _, reason in skipped), "a not-run mark must give its reason"
    assert len(skipped) <= len(BLOCKS) // 2, f"more blocks marked not run than run: {skipped}"


@pytest.mark.parametrize("line, code, not_run", [(b[0], b[2], b[3]) for b in BLOCKS],
                         ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_python_block_runs_on_the_cpu(line, code, not_run, tmp_path):
    if not_run is not None:
        pytest.skip(f"README.md:{line} is marked not run: {not_run}")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(CUDA_VISIBLE_DEVICES="", PYOPENGL_PLATFORM="egl")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"README.md:{line} failed:\n{code}\n{run.stderr[-4000:]}"
