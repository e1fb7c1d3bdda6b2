"""Tests of pspnet.cli as a user meets it: write failures, a missing backend, --help, --skip-bad.

Every failure must end in one line ``<prog>: error: ...`` naming the problem and
the file, a non-zero exit status and no traceback. Read-only and full file
systems are real ones (a tmpfs mounted read-only, or 4 KiB large), so the
errors come from the kernel as a user's would; where mounting is not allowed
(not root) those tests are skipped.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_pairs

from pspnet import cli
from pspnet.cli import EXIT_ERROR

BACKENDS_LINE = "(tensorflow, jax, torch)"


def assert_one_error_line(err: str, prog: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith(f"{prog}: warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- file systems that refuse writes -------------------------------------------------


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", str(folder)], capture_output=True)
    except OSError:  # no mount command (Windows, macOS)
        pytest.skip("no mount command")
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")


@pytest.fixture
def read_only(tmp_path):
    """A folder on a read-only file system, holding an empty folder ``existing``."""
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=1m")
    try:
        (folder / "existing").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def full(tmp_path):
    """A folder on a file system of 4 KiB (one page), so any real output fills it."""
    folder = tmp_path / "full"
    _mount_tmpfs(folder, "size=4k")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """An untrained fast model (any input size) saved with its description, trained size 32."""
    import keras

    import pspnet
    from pspnet.models.modelfile import ModelInfo, save_model

    keras.utils.set_random_seed(0)
    model = pspnet.build_pspnet("fast", input_shape=(None, None, 3))
    path = tmp_path_factory.mktemp("model") / "best.keras"
    save_model(model, path, ModelInfo(head="classes", num_classes=19, preset="fast", image_size=(32, 32)))
    return path


@pytest.fixture
def val(tmp_path) -> Path:
    return make_pairs(tmp_path / "data" / "val", 2, size=32, split="val")


def _read_only_line(err: str, prog: str, path: Path) -> None:
    line = assert_one_error_line(err, prog, "cannot write", "Read-only file system")
    assert re.search(rf"{re.escape(str(path))}(:|$)", line), line


def test_train_into_a_read_only_folder_is_one_line(read_only, tmp_path, capsys):
    data = tmp_path / "data"
    make_pairs(data / "train", 2, size=32)
    make_pairs(data / "val", 2, size=32, split="val")
    status = cli.train_main(
        [
            "--data",
            str(data),
            "--out",
            str(read_only / "run"),
            "--preset",
            "fast",
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--verbose",
            "0",
        ]
    )
    assert status == EXIT_ERROR
    _read_only_line(capsys.readouterr().err, "pspnet-train", read_only / "run")


def test_predict_into_a_read_only_folder_is_one_line(read_only, model_path, val, capsys):
    status = cli.predict_main(
        ["--model", str(model_path), "--input", str(val), "--out", str(read_only / "new"), "--quiet"]
    )
    assert status == EXIT_ERROR
    _read_only_line(capsys.readouterr().err, "pspnet-predict", read_only / "new")


def test_evaluate_into_a_read_only_folder_names_the_file_not_its_temporary(read_only, model_path, val, capsys):
    status = cli.evaluate_main(
        [
            "--model",
            str(model_path),
            "--data",
            str(val),
            "--out",
            str(read_only / "existing"),
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    assert status == EXIT_ERROR
    err = capsys.readouterr().err
    _read_only_line(err, "pspnet-evaluate", read_only / "existing" / "metrics.json")
    assert ".tmp-" not in err


def test_export_into_a_read_only_folder_is_one_line(read_only, model_path, capsys):
    status = cli.export_main(["--model", str(model_path), "--format", "onnx", "--out", str(read_only / "m.onnx")])
    assert status == EXIT_ERROR
    err = capsys.readouterr().err
    _read_only_line(err, "pspnet-export", read_only)
    assert ".pspnet-export-" not in err


def test_synth_into_a_read_only_folder_is_one_line(read_only, capsys):
    status = cli.data_main(["synth", str(read_only / "d"), "--train", "1", "--val", "1", "--size", "16", "--quiet"])
    assert status == EXIT_ERROR
    _read_only_line(capsys.readouterr().err, "pspnet-data", read_only / "d")


def test_evaluate_on_a_full_disk_is_one_line_and_leaves_no_partial_file(full, model_path, val, capsys):
    status = cli.evaluate_main(
        ["--model", str(model_path), "--data", str(val), "--out", str(full / "ev"), "--batch-size", "2", "--quiet"]
    )
    assert status == EXIT_ERROR
    line = assert_one_error_line(
        capsys.readouterr().err, "pspnet-evaluate", "No space left on device", f"cannot write {full / 'ev'}"
    )
    assert ".tmp-" not in line
    assert not [path.name for path in (full / "ev").iterdir() if ".tmp-" in path.name]


@pytest.mark.slow
def test_train_on_a_disk_that_fills_is_one_line_and_exits_cleanly(tmp_path):
    # A subprocess: h5py, whose weights file cannot be written, used to crash the process at exit.
    disk = tmp_path / "small"
    _mount_tmpfs(disk, "size=200k")  # the run folder's first files fit, the first weights file does not
    try:
        data = tmp_path / "data"
        make_pairs(data / "train", 2, size=32)
        make_pairs(data / "val", 2, size=32, split="val")
        code = "import sys; from pspnet.cli import train_main; sys.exit(train_main())"
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "--data",
                str(data),
                "--out",
                str(disk / "run"),
                "--cache-dir",
                str(tmp_path / "cache"),
                *TINY_RUN,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr == (
        f"pspnet-train: error: cannot write {disk / 'run' / 'backup' / 'epoch-000001.weights.h5'}"
        ": No space left on device\n"
    )


@pytest.mark.parametrize(
    "error, line",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "cannot write under OUT: No space left on device"),
        (
            OSError(errno.EROFS, "Read-only file system", "/x/.a.json.tmp-12-0123abcd"),
            "cannot write /x/a.json: Read-only file system",
        ),
        (OSError(errno.EIO, "Input/output error", "/x/y.png"), "Input/output error: /x/y.png"),
        (
            OSError(errno.ENOSPC, "Can't write data (file write failed: ...\n, errno = 28)"),
            "cannot write under OUT: No space left on device",
        ),
    ],
)
def test_any_os_error_is_one_line_naming_the_file_or_the_output(error, line, capsys):
    def body():
        raise error

    assert cli._run("pspnet-x", body, backend=False, out="OUT") == EXIT_ERROR
    assert capsys.readouterr().err == f"pspnet-x: error: {line}\n"


class ResourceExhaustedError(Exception):
    """Stands in for TensorFlow's out-of-memory error (the class name is what identifies it)."""


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        ResourceExhaustedError("OOM when allocating tensor with shape[8,64,128,128]\nmore detail"),
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB."),
    ],
)
def test_running_out_of_memory_is_one_line_that_says_what_to_lower(error, capsys):
    def body():
        raise error

    assert cli._run("pspnet-x", body, backend=False) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("pspnet-x: error: out of memory") and "--batch-size" in err and err.count("\n") == 1


def test_other_errors_still_surface(capsys):
    def body():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        cli._run("pspnet-x", body, backend=False)


# --- the Keras backend ---------------------------------------------------------------

# Each command with arguments it accepts: the backend is checked before anything is read.
COMMANDS = {
    "pspnet-train": ("train_main", []),
    "pspnet-evaluate": ("evaluate_main", ["--model", "m.keras", "--data", "d"]),
    "pspnet-predict": ("predict_main", ["--model", "m.keras", "--input", "i.jpg", "--out", "o"]),
    "pspnet-export": ("export_main", ["--model", "m.keras", "--format", "onnx", "--out", "m.onnx"]),
    "pspnet-bench": ("bench_main", ["models", "--presets", "fast"]),
}

# Makes ``import torch`` fail as if PyTorch were not installed (it is, in the test environment).
NO_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _NoTorch())
"""


def _command(prog: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    function, arguments = COMMANDS[prog]
    code = f"import sys; from pspnet import cli; sys.exit(cli.{function}())"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *env.pop("PYTHONPATH", "").split()]), **env}
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=120,
    )


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_a_misspelt_backend_is_one_line(prog, tmp_path):
    result = _command(prog, tmp_path, KERAS_BACKEND="tensorflw")
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr == f"{prog}: error: KERAS_BACKEND=tensorflw is not a Keras backend {BACKENDS_LINE}\n"


@pytest.mark.parametrize("prog", ["pspnet-train", "pspnet-predict"])
def test_the_torch_backend_without_torch_is_one_line(prog, tmp_path):
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "sitecustomize.py").write_text(NO_TORCH)
    result = _command(prog, tmp_path, KERAS_BACKEND="torch", PYTHONPATH=str(tmp_path / "shim"))
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr == f"{prog}: error: the torch backend needs PyTorch: pip install torch\n"


def test_a_backend_keras_knows_but_pspnet_does_not_run_on_is_one_line(tmp_path):
    result = _command("pspnet-predict", tmp_path, KERAS_BACKEND="numpy")
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr == (
        f"pspnet-predict: error: KERAS_BACKEND=numpy is a Keras backend pspnet does not run "
        f"on; use one of {BACKENDS_LINE}\n"
    )


def test_a_backend_named_in_keras_json_is_checked_too(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "keras.json").write_text('{"backend": "tensorflw"}')
    environment = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    code = "import sys; from pspnet import cli; sys.exit(cli.predict_main())"
    result = subprocess.run(
        [sys.executable, "-c", code, *COMMANDS["pspnet-predict"][1]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**environment, "KERAS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.stderr == (
        f"pspnet-predict: error: backend 'tensorflw' in {tmp_path / 'home' / 'keras.json'} "
        f"is not a Keras backend {BACKENDS_LINE}\n"
    )


# --- --help says what the code does --------------------------------------------------


def test_train_help_gives_the_defaults_the_config_resolves_to(capsys, tmp_path):
    from pspnet.training.config import TrainConfig

    with pytest.raises(SystemExit):
        cli.train_main(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    data = TrainConfig(data=str(tmp_path)).resolved()
    demo = TrainConfig().resolved()
    assert data.image_size == (256, 256) and demo.image_size == (64, 64)
    image_size = re.search(r"--image-size N\|HxW (.*?) --batch-size", text).group(1)
    assert "default: 256 (demo: 64)" in image_size, image_size
    assert "(default: None)" not in text and "None:" not in text


def test_evaluate_help_gives_the_output_folder_it_writes(capsys, tmp_path):
    from pspnet.inference.evaluate import default_out_dir

    with pytest.raises(SystemExit):
        cli.evaluate_main(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    out = re.search(r"--out OUT (.*?) --tta", text).group(1)
    assert "default: RUN/eval-<model>-<split>" in out and "model's folder" not in out, out
    assert default_out_dir(tmp_path / "RUN" / "best.keras", tmp_path / "d" / "val", False) == (
        tmp_path / "RUN" / "eval-best-val"
    )


def test_model_commands_help_gives_the_image_size_they_use(capsys):
    from pspnet.inference.segmenter import DEFAULT_IMAGE_SIZE

    assert DEFAULT_IMAGE_SIZE == 256  # what the help texts say a model without a trained size runs at
    with pytest.raises(SystemExit):
        cli.predict_main(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "default: the size the model was trained at, 256 if its file does not say" in text
    assert "(default 256)" not in text
    with pytest.raises(SystemExit):
        cli.export_main(["--help"])
    assert "default: the size the model was trained at, 256 if its file does not say" in re.sub(
        r"\s+", " ", capsys.readouterr().out
    )


# --- pspnet-train --skip-bad ---------------------------------------------------------


@pytest.fixture
def data_with_a_corrupt_file(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    make_pairs(data / "train", 5, size=32)
    make_pairs(data / "val", 2, size=32, split="val")
    bad = data / "train" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:250])
    return data, bad


TINY_RUN = [
    "--preset",
    "fast",
    "--image-size",
    "32",
    "--batch-size",
    "2",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "1",
    "--verbose",
    "0",
    "--val-images",
    "2",
]


def test_train_refuses_a_corrupt_file_in_one_line_without_skip_bad(data_with_a_corrupt_file, tmp_path, capsys):
    data, bad = data_with_a_corrupt_file
    status = cli.train_main(
        ["--data", str(data), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), *TINY_RUN]
    )
    assert status == EXIT_ERROR
    assert_one_error_line(capsys.readouterr().err, "pspnet-train", "truncated JPEG", str(bad))
    assert not (tmp_path / "run" / "best.keras").exists()


@pytest.mark.slow
def test_train_skip_bad_trains_without_the_corrupt_file(data_with_a_corrupt_file, tmp_path, capsys):
    data, bad = data_with_a_corrupt_file
    status = cli.train_main(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--skip-bad",
            *TINY_RUN,
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    warned = [line for line in err.splitlines() if line.startswith("pspnet-train: warning: skipped 1 unusable file")]
    assert len(warned) == 1 and str(bad.name) in warned[0] and "truncated JPEG" in warned[0], err
    assert (tmp_path / "run" / "best.keras").exists()
    assert '"skip_bad": true' in (tmp_path / "run" / "config.json").read_text()


def test_skip_bad_is_a_change_a_rerun_may_make():
    from pspnet.training.config import TrainConfig

    saved = TrainConfig(data="d").resolved()
    assert TrainConfig(data="d", skip_bad=True).resolved().changes_from(saved) == []


# --- wording ---------------------------------------------------------------------------


def test_synth_into_a_full_folder_names_the_flag_on_the_command_line(tmp_path, capsys):
    make_pairs(tmp_path / "d" / "train", 1, size=16)
    status = cli.data_main(["synth", str(tmp_path / "d"), "--train", "1", "--val", "1", "--size", "16", "--quiet"])
    assert status == EXIT_ERROR
    line = assert_one_error_line(capsys.readouterr().err, "pspnet-data", "pass --overwrite or choose another")
    assert "overwrite=True" not in line


def test_synth_into_a_full_folder_names_the_argument_in_python(tmp_path):
    from pspnet.data.synth import write_synthetic_set
    from pspnet.errors import DataError

    make_pairs(tmp_path / "d" / "train", 1, size=16)
    with pytest.raises(DataError, match="pass overwrite=True or choose another") as raised:
        write_synthetic_set(tmp_path / "d", train=1, val=1, size=16, progress=False)
    assert "--overwrite" not in str(raised.value)


def test_a_head_that_does_not_fit_the_model_reads_an_rgb_head(model_path, val, tmp_path, capsys):
    status = cli.predict_main(
        ["--model", str(model_path), "--input", str(val), "--out", str(tmp_path / "p"), "--head", "rgb", "--quiet"]
    )
    assert status == EXIT_ERROR
    assert_one_error_line(capsys.readouterr().err, "pspnet-predict", "an rgb head must output 3 channels", "outputs 19")


def test_bench_refuses_an_unwritable_json_before_measuring(read_only, capsys, monkeypatch):
    import pspnet.bench.models

    def measured(*args, **kwargs):
        raise AssertionError("measured before the --json file was checked")

    monkeypatch.setattr(pspnet.bench.models, "benchmark_models", measured)
    status = cli.bench_main(["models", "--presets", "fast", "--json", str(read_only / "rows.json")])
    assert status == EXIT_ERROR
    _read_only_line(capsys.readouterr().err, "pspnet-bench", read_only / "rows.json")


def test_bench_refuses_a_json_path_that_is_a_folder_before_measuring(tmp_path, capsys, monkeypatch):
    # The probe beside it was writable, so the folder was found by the rename after the measurement.
    import pspnet.bench.models

    def measured(*args, **kwargs):
        raise AssertionError("measured before the --json file was checked")

    monkeypatch.setattr(pspnet.bench.models, "benchmark_models", measured)
    status = cli.bench_main(["models", "--presets", "fast", "--json", str(tmp_path)])
    assert status == EXIT_ERROR
    assert_one_error_line(capsys.readouterr().err, "pspnet-bench", f"--json is a folder: {tmp_path}")


# TensorFlow's C++ start-up lines, written when a fixture first runs a model (not the command's).
TENSORFLOW_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "W0000 ", "E0000 ")


def test_a_damaged_video_is_one_line_without_ffmpegs_own(model_path, tmp_path, capfd):
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(5000))
    status = cli.predict_main(
        ["--model", str(model_path), "--input", str(video), "--out", str(tmp_path / "p"), "--quiet"]
    )
    assert status == EXIT_ERROR
    err = "\n".join(line for line in capfd.readouterr().err.splitlines() if not line.startswith(TENSORFLOW_NOISE))
    assert_one_error_line(err, "pspnet-predict", "cannot read video", str(video))


def test_an_output_folder_that_is_a_file_is_named_so(model_path, val, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    status = cli.evaluate_main(
        ["--model", str(model_path), "--data", str(val), "--out", str(tmp_path / "taken"), "--quiet"]
    )
    assert status == EXIT_ERROR
    assert_one_error_line(capsys.readouterr().err, "pspnet-evaluate", f"not a folder: {tmp_path / 'taken'}")
