"""Known-noise filters: each drops its one message and nothing else from the same source."""

import logging
import re
import warnings
from pathlib import Path

import pytest

from rpo_verl.utils import noise_filters
from rpo_verl.utils.noise_filters import KNOWN_NOISE

REPO = Path(__file__).resolve().parents[2]


def _example(noise) -> str:
    """A message matching the entry's regex (the regex with its groups and escapes resolved)."""
    text = re.sub(r"\(([^|)]*)\|[^)]*\)", r"\1", noise.message)  # first alternative of a group
    return text.replace(r"\d+", "8").replace("\\", "") + " (rest of the message)"


def _warn_from(module: str, message: str, category) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        noise_filters.install()
        warnings.warn_explicit(message, category, filename="x.py", lineno=1, module=module)
    return caught


@pytest.mark.parametrize("noise", [n for n in KNOWN_NOISE if n.kind == "warning"], ids=lambda n: n.message[:30])
def test_warning_filter_drops_only_its_message(noise):
    module = noise.source.replace("\\", "").rstrip(".") + ".sub"
    assert _example(noise) and re.match(noise.message, _example(noise))
    assert _warn_from(module, _example(noise), noise.category) == []
    # another message from the same module, and the same message from another module, still show
    assert len(_warn_from(module, "something else went wrong", noise.category)) == 1
    assert len(_warn_from("my_project.module", _example(noise), noise.category)) == 1


@pytest.mark.parametrize("noise", [n for n in KNOWN_NOISE if n.kind == "log"], ids=lambda n: n.source)
def test_log_filter_drops_only_its_message(noise, caplog):
    noise_filters.install()
    noise_filters.install()  # idempotent: one filter per entry
    source = logging.getLogger(noise.source)
    assert sum(isinstance(f, noise_filters._MessageFilter) and f.noise == noise for f in source.filters) == 1
    with caplog.at_level(logging.WARNING):
        source.warning(_example(noise))
        source.warning("something else went wrong")
        logging.getLogger("my_project.module").warning(_example(noise))
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (noise.source, "something else went wrong"), ("my_project.module", _example(noise))]


def test_every_entry_has_a_reason_and_is_documented():
    doc = (REPO / "docs" / "console.md").read_text()
    for noise in KNOWN_NOISE:
        assert noise.kind in ("warning", "log") and len(noise.reason) > 20
        assert f"`{noise.source}`" in doc, f"{noise.source} missing from docs/console.md's table"
