"""docs/failures.md stays true: its example report is what FailureReport prints, and every
component it names is one the report can name."""

import re
from pathlib import Path

from rpo_verl.trainer.failures import EXIT_CODE, FailureReport, component_names

DOC = (Path(__file__).resolve().parents[2] / "docs" / "failures.md").read_text(encoding="utf-8")


def test_example_report_is_the_printed_format():
    example = re.search(r"```\n(rpo_verl: the run stopped.*?)\n```", DOC, re.S).group(1).splitlines()
    component = re.match(r"rpo_verl: the run stopped: the (.+) failed\.$", example[0]).group(1)
    cause = example[1].removeprefix("  cause: ")
    item = example[2].removeprefix("  input: ")
    paths = example[3].removeprefix("  full log: ").split("; ")
    assert FailureReport(component, cause, item).message(paths).splitlines() == example
    assert component in component_names().values()
    assert f"exit\ncode {EXIT_CODE}" in DOC or f"exit code {EXIT_CODE}" in DOC


def test_named_components_exist():
    names = set(component_names().values())
    for described in ("reward worker", "agent loop", "rollout server (hf)", "RPO cache service", "DPS scheduler",
                      "TransferQueue", "trainer"):
        assert described in names
        assert described.split(" (")[0] in DOC
