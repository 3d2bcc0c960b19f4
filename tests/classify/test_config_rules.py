"""The classification config's cross-field rules hold for a library caller of :func:`run_classify` too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tomoformer.classify.config import ClassifyConfig
from tomoformer.errors import ConfigError


def one_line(err: pytest.ExceptionInfo[ConfigError], *words: str) -> None:
    text = str(err.value)
    assert "\n" not in text and all(word in text for word in words), text


def test_classify_rules_hold_for_the_library_entry_point(strokes_npz: Path, tmp_path: Path) -> None:
    from tomoformer.classify.run import run_classify

    with pytest.raises(ConfigError) as err:
        ClassifyConfig(weights="w.safetensors", pretrained=True)
    one_line(err, "--weights", "--pretrained")
    out = tmp_path / "cls"
    config = ClassifyConfig(data=str(strokes_npz), out=str(out), weights=str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError) as err:
        run_classify(config, source=tmp_path / "some.ckpt")
    one_line(err, "--from", "--weights")
    assert not out.exists()
