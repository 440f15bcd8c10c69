"""Hostile scenario files and simulation cuts: every problem is a one-paragraph message (never a
traceback), user text is never read as rich markup, and figures from a recovery window that did
not close are marked. A fixed-seed mutation fuzz of a bundled example runs ``lumen validate``."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lumen.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "lumen" / "scenarios" / "examples"
BASE = (EXAMPLES / "node-failure-mooncake.yaml").read_text(encoding="utf-8")
SEED = 1_204
runner = CliRunner()


def validate(tmp_path: Path, text: str, name: str = "s.yaml") -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path)], terminal_width=400)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"lumen validate raised {result.exception!r} on:\n{text[:400]}")
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_deeply_nested_yaml_is_refused_without_recursion_error(tmp_path: Path) -> None:
    code, text = validate(tmp_path, "a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert code == 1 and "nested more than 32 levels deep" in text
    nested = "".join("  " * k + "k:\n" for k in range(200))
    code, text = validate(tmp_path, "description:\n" + nested)
    assert code == 1 and "nested more than 32 levels deep" in text


@pytest.mark.parametrize(
    ("edit", "shown"),
    [
        (("name: node-failure-mooncake", 'name: "[/bold]"'), "(got '[/bold]')"),
        (("  seed: 7", '  seed: 7\n  "[/bold]": 1'), "workload.[/bold]: unknown key"),
        (
            ("name: node-failure-mooncake", 'name: "Bad [red]x[/red]"'),
            "pattern '^[a-z0-9][a-z0-9._-]*$' (got 'Bad [red]x[/red]')",
        ),
    ],
)
def test_markup_in_user_text_is_printed_literally(
    tmp_path: Path, edit: tuple[str, str], shown: str
) -> None:
    code, text = validate(tmp_path, BASE.replace(*edit))
    assert code == 1 and shown in text


def test_markup_in_a_valid_description_is_shown_literally(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        re.sub(r"description: >-\n(  .*\n)+", 'description: "[/bold] [red]x"\n', BASE),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["scenario", "show", str(path)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "[/bold] [red]x" in result.output


@pytest.mark.parametrize(("target", "what"), [("/tmp", "a directory"), ("/dev/zero", "a device")])
def test_a_directory_or_device_as_trace_is_named_precisely(
    tmp_path: Path, target: str, what: str
) -> None:
    code, text = validate(tmp_path, BASE.replace('"@mooncake-synthetic"', f'"{target}"'))
    assert code == 1 and f"trace file '{target}' is {what}" in text and "not found" not in text


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    text = (EXAMPLES / "paper-4w-qwen3-32b-sharegpt.yaml").read_text(encoding="utf-8")
    text = text.replace('file: "@sharegpt-v3"}', 'file: "missing-lengths.csv"}', 1)
    text = text.replace("tensor_parallel: 2", "tensor_parallel: 1")
    text = text.replace("model: Qwen3-32B", "model: Llama-3.1-70B")  # 140 GB on one 80 GB GPU
    text = text.replace("draft_model: Qwen3-4B", "draft_model: Llama-3.2-1B")
    code, out = validate(tmp_path, text)
    assert code == 1 and "(2 problems)" in out
    assert "workload.synthetic.prompt_tokens.file" in out and "cluster:" in out


def _mutations(rng: random.Random) -> list[str]:
    lines = BASE.splitlines(keepends=True)
    hostile = ["[/bold]", "[red]", "\x00", "*alias", "&a", "{", "]", ": :", "\t", "- ", "é"]
    out = []
    for _ in range(40):
        mutated = list(lines)
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(mutated))
            choice = rng.randrange(4)
            if choice == 0:
                del mutated[k]
            elif choice == 1:
                at = rng.randrange(len(mutated[k]) + 1)
                mutated[k] = mutated[k][:at] + rng.choice(hostile) + mutated[k][at:]
            elif choice == 2:
                mutated.insert(k, mutated[rng.randrange(len(mutated))])
            else:
                mutated[k] = "".join(rng.sample(mutated[k], len(mutated[k])))
        out.append("".join(mutated))
    return out


def test_mutated_scenarios_get_a_clear_verdict(tmp_path: Path) -> None:
    verdicts = {0: 0, 1: 0}
    for k, text in enumerate(_mutations(random.Random(SEED))):
        code, out = validate(tmp_path, text, f"m{k}.yaml")
        assert code in (0, 1), out
        assert ("invalid scenario" in out) if code else out.startswith("ok ")
        verdicts[code] += 1
    assert verdicts[1] > 0


def test_a_cut_run_marks_recovery_windows_that_did_not_close(tmp_path: Path) -> None:
    out_dir = tmp_path / "sim"
    args = ["simulate", "paper-4w-qwen3-32b", "--policies", "lumen,fixed-checkpointing"]
    args += ["--seeds", "1", "--requests", "3700", "--out", str(out_dir)]
    result = runner.invoke(app, args, terminal_width=300)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: the recovery window of" in text and "did not close" in text
    assert re.search(r"[+-]\d+\.\d %( ± [\d.]+)? \(open\)", text)  # changes are marked
    report = (out_dir / "report.md").read_text(encoding="utf-8")
    assert "**Warning:** the recovery window" in report
    comparison = report.split("## Against the baselines", 1)[1]
    assert "% (open)" in comparison
