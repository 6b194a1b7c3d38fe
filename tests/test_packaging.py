"""The project's own files must install everything: pyproject, environment.yml, Makefile, README, CI."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment_pip_lines() -> list[str]:
    lines, in_pip = [], False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s+- pip:\s*$", line):
            in_pip = True
            continue
        if in_pip:
            m = re.match(r"^\s{6,}- (.+?)\s*$", line)
            if not m:
                break
            lines.append(m.group(1))
    return lines


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    pip_lines = _environment_pip_lines()
    assert "-e ." in pip_lines, "environment.yml must install the package itself"
    assert set(pip_lines) - {"-e ."} == wanted


def test_environment_yml_python_matches():
    text = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in text
    assert "3.11" in _pyproject()["project"]["requires-python"]


def test_torch_pins():
    deps = _pyproject()["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make run", "make test"], commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci


def test_makefile_sets_up_the_environment_before_run_and_test():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test"):
        rule = re.search(rf"^{target}: (.*)$", makefile, re.M)
        assert rule and "$(STAMP)" in rule.group(1), f"`make {target}` must depend on the environment stamp"
    assert 'pip install' in makefile and '-e ".[dev]"' in makefile
