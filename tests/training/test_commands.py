"""Every command the project ships (a module with a `__main__`) answers --help; without the training
dependencies, a training command says in one line how to install them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

# The peers' apps (loadtests/peers/) are scripts for their own virtual environments, where `make bench`
# runs them: each imports its serving system (kserve, litserve, ...) that .venv does not have.
FOLDERS = ("training", "loadtests", "service")
NOT_HERE = ("loadtests/peers/",)


def commands() -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if 'if __name__ == "__main__":' in path.read_text() and not relative.startswith(NOT_HERE):
                found.append(relative.removesuffix(".py").replace("/", "."))
    return found


def test_every_command_answers_help():
    modules = commands()
    assert "training.reference" in modules and "loadtests.bench" in modules
    runs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for m in modules}  # fmt: skip
    failed = {}
    for module, proc in runs.items():
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0 or "usage:" not in out.lower():  # argparse: "usage:", click: "Usage:"
            failed[module] = out[-500:]
    assert not failed, failed


def test_without_torch_a_training_command_says_how_to_install_it_in_one_line():
    blocked = "import runpy, sys; sys.modules['torch'] = None; sys.argv[1:] = ['--help']; "
    for module in ("training.train_housing", "training.make_card", "training.reference"):
        run = subprocess.run([sys.executable, "-c", blocked + f"runpy.run_module({module!r}, run_name='__main__')"],
                             cwd=REPO, capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 1 and run.stdout == "", (module, run.stdout, run.stderr)
        assert run.stderr.count("\n") == 1 and "make train-env" in run.stderr, (module, run.stderr)
