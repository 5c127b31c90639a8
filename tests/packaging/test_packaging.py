"""The Docker image and the README's settings table (the Umbrel package: test_umbrel.py)."""

from __future__ import annotations

import json
import re
import shlex

from tests.packaging.sources import OTHER_SETTINGS, ROOT, settings_reads


def readme_settings_table() -> set[str]:
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing: it documents the settings table"
    names = set()
    for line in readme.read_text().splitlines():
        cells = line.split("|")
        if line.lstrip().startswith("|") and len(cells) > 2:
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]))
    return {name for name in names if name.startswith("SOVEREIGN_") or name in OTHER_SETTINGS}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest)
        for word, rest in (line.split(None, 1) for line in lines if line and line[0] != "#")
    ]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """The instructions after the last FROM."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from + 1 :]


def test_it_reads_every_setting_the_readme_documents() -> None:
    assert readme_settings_table() - settings_reads() == set()


def test_it_documents_every_setting_it_reads_in_the_readme() -> None:
    assert settings_reads() - readme_settings_table() == set()


def test_it_builds_an_image_that_runs_sovereign_as_a_non_root_user() -> None:
    stage = dockerfile_final_stage()
    users = [rest.split(":")[0] for word, rest in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = dict(
        item.split("=", 1) for word, rest in stage if word == "ENV" for item in shlex.split(rest)
    )
    exposed = [port for word, rest in stage if word == "EXPOSE" for port in rest.split()]
    assert env["SOVEREIGN_PORT"] in exposed
    command = json.loads(next(rest for word, rest in stage if word == "CMD"))
    assert command[command.index("manage.py") + 1] == "run"


def test_the_image_installs_llama_cpp_from_the_build_that_leaves_amx_out() -> None:
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    built = next(i for i, run in enumerate(runs) if "sovereign/llama_build.py" in run)
    installed = next(i for i, run in enumerate(runs) if re.search(r"pip install \S*\.", run))
    assert built < installed  # otherwise pip compiles llama.cpp itself, with AMX


def test_it_bakes_no_data_directory_into_the_image() -> None:
    run = next(rest for word, rest in dockerfile_final_stage() if "collectstatic" in rest)
    build_data = re.search(r"SOVEREIGN_DATA_DIR=(\S+)", run)
    assert build_data and f"rm -rf {build_data[1]}" in run  # its secret key goes with it
