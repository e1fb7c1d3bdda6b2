"""The README's commands and Python snippet, read from README.md and run verbatim
in a temporary folder laid out as they expect (tiny untrained models, generated pairs)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_pairs

SIZE = (32, 48)


def readme_section(title: str) -> str:
    """The text of README.md under ``## title``, up to the next ``## `` heading."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def code_blocks(section: str, language: str) -> list[str]:
    """The fenced ``language`` code blocks of a README section."""
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def readme_command(section: str, program: str, *words: str) -> list[str]:
    """The words of the first ``program`` command in the section's bash blocks that holds every one of ``words``."""
    for block in code_blocks(section, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == program and all(word in argv for word in words):
                return argv
    raise AssertionError(f"no {program} {' '.join(words)} command under the README section")


def save_tiny_model(path: Path) -> Path:
    """An untrained fast PSPNet that takes any size, saved as pspnet-train saves (trained at 32x48)."""
    import keras

    import pspnet
    from pspnet.models.modelfile import ModelInfo, save_model

    keras.utils.set_random_seed(0)
    model = pspnet.build_pspnet("fast", input_shape=(None, None, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path, ModelInfo(head="classes", num_classes=19, preset="fast", image_size=SIZE))
    return path


@pytest.mark.slow
def test_the_readme_onnx_export_command_runs_verbatim(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("export runs on TensorFlow")
    from pspnet.cli import export_main

    argv = readme_command(readme_section("Deploy"), "pspnet-export", "--format", "onnx")
    model, out = Path(argv[argv.index("--model") + 1]), Path(argv[argv.index("--out") + 1])
    assert not (tmp_path / out.parent).exists()  # the README's folder is not made beforehand
    monkeypatch.chdir(tmp_path)
    save_tiny_model(model)
    assert export_main(argv[1:]) == 0, capsys.readouterr().err
    assert out.is_file() and Path(f"{out}.json").is_file()


def test_the_readme_python_snippet_runs_verbatim(tmp_path, monkeypatch):
    snippet = code_blocks(readme_section("Python"), "python")[0]
    model_path = re.search(r'Segmenter\.load\("([^"]+)"\)', snippet).group(1)
    photo_path = Path(re.search(r'read_pair\("([^"]+)"\)', snippet).group(1))
    monkeypatch.chdir(tmp_path)
    make_pairs(photo_path.parent, int(photo_path.stem), size=32, split="val")
    save_tiny_model(Path(model_path))
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert Path("prediction.png").is_file()
    assert namespace["train_ids"].shape == (1, 32, 32) and namespace["train_ids"].dtype == np.uint8


@pytest.mark.slow
def test_the_readme_own_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """ "Your own data": each command as written, on a tiny set, with flags appended that only make it small."""
    from pspnet.cli import data_main, evaluate_main, predict_main, train_main

    section = readme_section("Your own data")
    small = {
        ("pspnet-data", "synth"): ["--train", "4", "--val", "2", "--size", "24", "--quiet"],
        ("pspnet-train",): [
            "--preset",
            "fast",
            "--out",
            "runs/my_set-lite-classes",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--base-size",
            "24",
            "40",
            "--crop-size",
            "24",
            "--batch-size",
            "2",
            "--workers",
            "1",
            "--verbose",
            "0",
        ],
    }
    mains = {
        "pspnet-data": data_main,
        "pspnet-train": train_main,
        "pspnet-evaluate": evaluate_main,
        "pspnet-predict": predict_main,
    }
    monkeypatch.chdir(tmp_path)
    steps = [
        ("pspnet-data", "synth"),
        ("pspnet-data", "inspect"),
        ("pspnet-train",),
        ("pspnet-evaluate",),
        ("pspnet-predict",),
    ]
    for program, *words in steps:
        argv = readme_command(section, program, *words)
        assert mains[program](argv[1:] + small.get((program, *words), [])) == 0, capsys.readouterr().err
    assert json.loads(Path("runs/my_set-lite-classes/metrics.json").read_text())["per_class_iou"]
    assert len(list(Path("predictions").glob("*_ids.png"))) == 2
