"""``TrainConfig``: every setting of a training run, checked, resolved and saved beside it.

Importing this module loads neither Keras nor a backend, so the command line
can build its parsers and reject bad flags at once.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pspnet.checks import check_choice, flag_name, parse_size
from pspnet.errors import ConfigError
from pspnet.models.presets import DECODERS, HEADS, LITE_VARIANTS, MIN_SIZE, OUTPUT_STRIDES, PRESETS, PRETRAINED

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "poly")
CLASS_WEIGHTINGS = ("none", "inverse_sqrt_freq", "median_freq")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# The data layouts (the same tuple as pspnet.data.layouts.LAYOUTS, which a test
# checks; kept here so that this module loads no data code).
LAYOUTS = ("pairs", "cityscapes", "folders")

DEMO_SIZE = 64  # side of the demo set's images (pspnet.data.synth writes it)

# What fields left at None become (see TrainConfig.resolved). The demo's were
# chosen by measurement on a 2-core CPU (docs/BENCHMARKS.md, "The demo"): no
# rescaling and a finer feature map, since its thin classes (poles, signs) are a
# few pixels wide at 64 px; batch 2, which a CPU runs at the images/s of batch 8
# with four times the updates; 2400 steps over 1440 pairs, which fit in the
# time and keep train and val mIoU together (240 pairs overfit); poly decay.
# On real data the defaults are the recipe that scored best after 20 minutes
# of training on that CPU (docs/BENCHMARKS.md, "Real data"): the lite preset
# from ImageNet weights, Adam 1e-3 with poly decay (to the end of --time-limit
# when one is set) and decoupled weight decay 1e-4. The demo keeps the fast
# preset: at 64 px a stride-16 backbone sees 4x4 features, and it must stay short.
DEMO_DEFAULTS = {"preset": "fast", "image_size": DEMO_SIZE, "batch_size": 2, "epochs": 8, "steps_per_epoch": 300,
                 "scale": False, "output_stride": 4, "adam_learning_rate": 4e-3, "weight_decay": 0.0}
DATA_DEFAULTS = {"preset": "lite", "image_size": 256, "batch_size": 8, "epochs": 50, "steps_per_epoch": None,
                 "scale": True, "output_stride": None, "adam_learning_rate": 1e-3, "weight_decay": 1e-4}
# The base and crop sizes a layout trains at when --base-size and --crop-size
# are left out (the demo: DEMO_DEFAULTS' 64, no crop). Cityscapes frames
# (2048x1024) train at half their resolution, on 512x512 crops of the randomly
# scaled frames: a quarter of a frame per image, which a CPU can still step
# through; mmsegmentation's recipe for a GPU box is --base-size 1024 2048
# --crop-size 512 1024. Pairs (256x256) and folders train on the whole image
# fit into 256x256 (crop = base); an image smaller than the crop is padded.
LAYOUT_SIZES = {
    "pairs": {"image_size": (256, 256), "crop_size": None},
    "cityscapes": {"image_size": (512, 1024), "crop_size": (512, 512)},
    "folders": {"image_size": (256, 256), "crop_size": None},
}
SGD_LEARNING_RATE = 1e-2  # the paper's
SGD_HEAD_LR_MULTIPLIER = 10.0  # the paper's code (hszhao/semseg): the new layers learn 10x faster

# The allowed values of the config's string fields (also the flags' choices).
CHOICES = {
    "preset": PRESETS,
    "head": HEADS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "class_weighting": CLASS_WEIGHTINGS,
    "precision": PRECISIONS,
    "layout": LAYOUTS,
    "decoder": DECODERS,
}

# Fields a rerun may change: how long, how fast or how verbosely the run goes
# on, never what it is. A larger --epochs or --time-limit extends a finished run.
# skip_bad is one of them: it decides only whether an unusable file stops the
# run or is skipped with a warning, never which usable files are read, so a
# run that went on without it read exactly the files it would have read with it.
RESUMABLE_CHANGES = (
    "out", "epochs", "time_limit", "early_stopping", "val_images", "workers", "cache_dir", "verbose",
    "steps_per_execution", "jit_compile", "distribute", "sync_batch_norm", "coordinator", "num_processes",
    "process_id", "skip_bad",
)


@dataclass
class TrainConfig:
    """Everything one training run depends on; saved as ``config.json`` in the run folder.

    Fields left at ``None`` are filled in by ``resolved()`` (demo or data defaults).
    """

    data: str = "demo"  # data folder (a root in one of the --layout layouts), or "demo" (synthetic pairs in the cache)
    layout: str | None = None  # pairs (ROOT/train, ROOT/val composites), cityscapes (ROOT/leftImg8bit + ROOT/gtFine) or folders (ROOT/images + ROOT/masks + ROOT/dataset.json); None: detected from the data folder
    out: str | None = None  # run folder; None: runs/<data name>-<preset>-<head> (same command, same folder)
    preset: str | None = None  # model preset: fast, seed, pspnet50, lite, lite1 or lite2 (pspnet.models.builder.build_pspnet); None: lite (demo: fast)
    head: str = "classes"  # classes (logits, cross-entropy) or rgb (the seed's sigmoid colours, MSE)
    image_size: int | tuple[int, int] | None = None  # base size, N or H W: each image is rescaled, keeping its aspect ratio, to fit it at scale 1 (validation batches are this size; the model file records it); None: 256 (demo: 64), 512x1024 on a cityscapes layout
    crop_size: int | tuple[int, int] | None = None  # training crop, N or H W, taken from each randomly scaled image (padded, labels ignored, where the image is smaller); None: the base size (512x512 on a cityscapes layout)
    batch_size: int | None = None  # global batch over all devices; None: 8 (demo: 2)
    epochs: int | None = None  # number of epochs (a larger value extends a finished run); None: 50 (demo: 8)
    steps_per_epoch: int | None = None  # batches per epoch; None: one pass over train/ (demo: 300)
    time_limit: float | None = None  # minutes of training steps (validation not counted, a resumed run counts on) after which the epoch ends and the run stops; None: no limit
    optimizer: str = "adam"  # adam (the seed) or sgd (the paper, with momentum)
    learning_rate: float | None = None  # initial learning rate; None: 1e-3 for adam (demo: 4e-3), 1e-2 for sgd
    schedule: str | None = None  # constant or poly (power 0.9 down to 0 at the last epoch, or at --time-limit if that comes first); None: poly
    momentum: float = 0.9  # sgd momentum (the paper: 0.9)
    weight_decay: float | None = None  # sgd: L2 penalty added to the gradient, as the paper; adam: decoupled (AdamW), norms and biases exempt; None: 1e-4 (demo: 0)
    head_lr_multiplier: float | None = None  # learning-rate factor of the layers after the backbone; None: 10 for sgd (the paper), 1 for adam
    flip: bool = True  # random horizontal flips
    scale: bool | None = None  # random rescaling in [0.5, 2] of the image fit into the base size, then the crop (the paper's); None: on (demo: off)
    jitter: bool = False  # random brightness / contrast / saturation
    ohem: bool = False  # online hard example mining (mmsegmentation's OHEMPixelSampler): the loss over the pixels whose true class has a probability under 0.7, and at least the hardest 10%
    class_weighting: str | None = None  # none, inverse_sqrt_freq or median_freq; None: none
    aux_loss_weight: float = 0.4  # pspnet50: weight of the auxiliary head's loss (the paper: 0.4); 0: no aux head
    dropout: float = 0.1  # dropout before the classifier (fast, pspnet50, lite, lite1, lite2)
    output_stride: int | None = None  # fast: features at 1/8 (8) or 1/4 (4) of the input, None: 8 (demo: 4); lite, lite1, lite2: 16, 8 or 32, None: 16
    decoder: str | None = None  # lite, lite1, lite2: pyramid (the pyramid's output classified at the output stride) or fusion (DeepLabV3+'s decoder: fused with the backbone's 1/4 features first); None: pyramid
    backbone_weights: str | None = None  # pspnet50, lite, lite1, lite2: none (random), imagenet, or a weights file (ResNet50 .h5; the Lite variant's .pth or .npz); None: imagenet for the lite presets, none for pspnet50 (its download needs a network)
    precision: str = "float32"  # dtype policy: float32, mixed_bfloat16, mixed_float16, or auto: mixed_bfloat16 where the machine has bfloat16 matrix instructions (a CPU with AMX or AVX-512 BF16, a GPU from Ampere on) and the preset gains (not lite on a CPU), else float32; a resumed run keeps its own
    jit_compile: bool | None = None  # XLA compilation; None: Keras's "auto"
    steps_per_execution: int = 1  # batches per compiled call (fewer host round trips)
    seed: int = 0  # seeds the weights, the shuffling and the augmentation (0 or more)
    distribute: bool = False  # data-parallel over every visible device, and over several processes (see pspnet.training.distribute)
    sync_batch_norm: bool = True  # --distribute on tensorflow: batch norm over the global batch (all-reduced); off: each replica's own part (jax: always global)
    coordinator: str | None = None  # --distribute on jax, several processes: HOST:PORT of process 0; None: $JAX_COORDINATOR_ADDRESS, or Slurm's
    num_processes: int | None = None  # --distribute on jax: processes in the job; None: $KERAS_DISTRIBUTION_NUM_PROCESSES, or Slurm's, else 1
    process_id: int | None = None  # --distribute on jax: this process's index (0 writes the run folder); None: $KERAS_DISTRIBUTION_PROCESS_ID, or Slurm's
    val_images: int | None = None  # validate each epoch on the first N val pairs (the final metrics.json uses all); None: all
    early_stopping: int | None = None  # stop after this many epochs without a better val mIoU; None: off
    cache_dir: str | None = None  # cache folder of decoded splits (pspnet.data.load_split); None: $PSPNET_CACHE/splits or ~/.cache/pspnet/splits
    skip_bad: bool = False  # skip unusable data files (truncated, unreadable, greyscale, odd-sized) with one warning naming them; off: the first is an error
    workers: int | None = None  # input pipeline threads; None: min(4, CPU count)
    verbose: int | None = None  # 0 silent, 1 progress bar, 2 one line per epoch; None: 1 on a terminal, 2 in a log

    def __post_init__(self):
        self.image_size = parse_size(self.image_size, "--base-size")
        self.crop_size = parse_size(self.crop_size, "--crop-size")
        self.data = str(self.data)
        if self.preset is None:  # settled at once: the checks below depend on it
            self.preset = (DEMO_DEFAULTS if self.is_demo else DATA_DEFAULTS)["preset"]
        if self.out is not None:
            self.out = str(self.out)
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if value is not None or name in ("preset", "head", "optimizer", "precision"):  # others: None is a default
                check_choice(name, value, choices)
        self._check_numbers()
        self._check_combinations()

    def _check_numbers(self) -> None:
        """Each numeric field in its range (one ConfigError naming the flag)."""
        for name in ("batch_size", "epochs", "steps_per_epoch", "early_stopping", "workers", "val_images",
                     "steps_per_execution", "num_processes"):
            value = getattr(self, name)
            if value is not None and not _is_int(value, minimum=1):
                raise ConfigError(f"{flag_name(name)} must be a positive integer, got {value!r}")
        if not _is_int(self.seed, minimum=0) or self.seed >= 2**32:
            raise ConfigError(f"--seed must be an integer from 0 to 2**32 - 1, got {self.seed!r}")
        if self.process_id is not None and not _is_int(self.process_id, minimum=0):
            raise ConfigError(f"--process-id must be an integer 0 or more, got {self.process_id!r}")
        if self.coordinator is not None and not _is_address(self.coordinator):
            raise ConfigError(f"--coordinator must be HOST:PORT, got {self.coordinator!r}")
        if self.verbose is not None and self.verbose not in (0, 1, 2):
            raise ConfigError(f"--verbose must be 0, 1 or 2, got {self.verbose!r}")
        for name in ("time_limit", "learning_rate", "head_lr_multiplier"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0):
                raise ConfigError(f"{flag_name(name)} must be a positive number, got {value!r}")
        for name in ("weight_decay", "aux_loss_weight", "momentum"):
            if name == "weight_decay" and self.weight_decay is None:
                continue
            if not (_is_number(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{flag_name(name)} must be >= 0, got {getattr(self, name)!r}")
        if self.output_stride is not None and self.output_stride not in OUTPUT_STRIDES.get(self.preset, ()):
            choices = {preset: sorted(strides) for preset, strides in OUTPUT_STRIDES.items()}
            raise ConfigError(f"--output-stride must be one of {choices} for those presets, "
                              f"got {self.output_stride!r} for {self.preset}")
        if not (_is_number(self.dropout) and 0 <= self.dropout < 1):
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if not self.momentum <= 1:  # Keras's SGD refuses more, in a traceback after the data loaded
            raise ConfigError(f"--momentum must lie in [0, 1], got {self.momentum!r}")

    def _check_combinations(self) -> None:
        """Flags that only make sense together (one ConfigError naming both)."""
        if self.head == "rgb" and self.class_weighting not in (None, "none"):
            raise ConfigError("--class-weighting needs --head classes (the rgb head is trained with MSE)")
        if self.head == "rgb" and self.ohem:
            raise ConfigError("--ohem needs --head classes (the rgb head is trained with MSE)")
        if self.optimizer != "sgd" and self.head_lr_multiplier not in (None, 1):
            raise ConfigError("--head-lr-multiplier needs --optimizer sgd")
        if self.decoder is not None and self.preset not in LITE_VARIANTS:
            raise ConfigError(f"--decoder needs --preset {' or '.join(LITE_VARIANTS)}, not {self.preset}")
        if self.backbone_weights not in (None, "none") and self.preset not in PRETRAINED:
            raise ConfigError(f"--backbone-weights needs --preset {' or '.join(PRETRAINED)}, not {self.preset}")
        for name in ("image_size", "crop_size"):
            size = getattr(self, name)
            if size is not None and min(size) < MIN_SIZE[self.preset]:
                raise ConfigError(f"{flag_name(name)} must be at least {MIN_SIZE[self.preset]} for the "
                                  f"{self.preset} preset, got {size[0]}x{size[1]}")
        if self.is_demo and self.layout not in (None, "pairs"):
            raise ConfigError(f"--layout {self.layout}: the demo set is pairs (pspnet-data synth OUT --layout "
                              f"{self.layout} writes a synthetic set in that layout)")
        if self.head == "rgb" and self.layout not in (None, "pairs"):
            raise ConfigError(f"--head rgb needs the pairs layout (its colour targets are the composites' "
                              f"label halves), not {self.layout}")

    @property
    def is_demo(self) -> bool:
        """Whether the run trains on the built-in synthetic demo set."""
        return self.data == "demo"

    def resolved(self, layout: str | None = None) -> TrainConfig:
        """Returns a copy with every ``None`` default filled in (what config.json records).

        Args:
            layout: the data folder's layout (``pspnet.data.layouts.detect_layout``),
                used when the config's is None; None: pairs. The caller looks
                at the folder, so that this stays a pure function of its values.

        Returns:
            A TrainConfig whose layout, out, image_size, crop_size,
            batch_size, epochs, learning_rate, schedule, weight_decay,
            head_lr_multiplier, scale, class_weighting, verbose, (lite)
            backbone_weights and decoder and (fast) output_stride are set;
            ``data`` is an absolute path (or "demo").
        """
        layout = "pairs" if self.is_demo else self.layout or layout or "pairs"
        check_choice("layout", layout, LAYOUTS)
        if self.head == "rgb" and layout != "pairs":
            raise ConfigError(f"--head rgb needs the pairs layout, and {self.data} is a {layout} folder")
        defaults = DEMO_DEFAULTS if self.is_demo else {**DATA_DEFAULTS, **LAYOUT_SIZES[layout]}
        image_size = self.image_size or parse_size(defaults["image_size"])
        # An explicit base size keeps its crop = base unless --crop-size says otherwise.
        crop_size = self.crop_size or (defaults.get("crop_size") if self.image_size is None else None) or image_size
        data = self.data if self.is_demo else str(Path(self.data).expanduser().resolve())
        data_name = "demo" if self.is_demo else Path(data).name
        sgd = self.optimizer == "sgd"
        learning_rate = SGD_LEARNING_RATE if sgd else defaults["adam_learning_rate"]
        return dataclasses.replace(
            self,
            data=data,
            layout=layout,
            # ~ expanded as in data: the shell leaves it alone after "=" (--out=~/runs/a).
            out=str(Path(self.out or Path("runs") / f"{data_name}-{self.preset}-{self.head}").expanduser()),
            cache_dir=None if self.cache_dir is None else str(Path(self.cache_dir).expanduser()),
            image_size=image_size,
            crop_size=parse_size(crop_size),
            batch_size=self.batch_size or defaults["batch_size"],
            epochs=self.epochs or defaults["epochs"],
            learning_rate=self.learning_rate or learning_rate,
            head_lr_multiplier=self.head_lr_multiplier or (SGD_HEAD_LR_MULTIPLIER if sgd else 1.0),
            steps_per_epoch=self.steps_per_epoch or defaults["steps_per_epoch"],
            schedule=self.schedule or "poly",
            scale=defaults["scale"] if self.scale is None else self.scale,
            weight_decay=defaults["weight_decay"] if self.weight_decay is None else self.weight_decay,
            class_weighting=self.class_weighting or "none",
            backbone_weights=self.backbone_weights or ("imagenet" if self.preset.startswith("lite") else None),
            output_stride=self.output_stride or _default_stride(self.preset, defaults),
            decoder=self.decoder or _default_decoder(self.preset),
            verbose=(1 if _is_terminal() else 2) if self.verbose is None else self.verbose,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        for name in ("image_size", "crop_size"):
            if values[name] is not None:
                values[name] = list(values[name])
        return values

    def to_json(self) -> str:
        """The config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Reads a config written by ``to_json``.

        Args:
            text: JSON text of an object with TrainConfig fields.

        Returns:
            The TrainConfig.

        Raises:
            ConfigError: invalid JSON, unknown fields or invalid values.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError("config JSON must be an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"invalid config: {error}") from error

    def changes_from(self, saved: TrainConfig) -> list[str]:
        """The fields that make this config another run than ``saved`` (both resolved).

        Returns:
            ``"--flag old -> new"`` for each field outside ``RESUMABLE_CHANGES``
            that differs.
        """
        before, after = _from_before_layouts(saved).to_dict(), self.to_dict()
        return [
            f"{flag_name(name)} {before[name]!r} -> {after[name]!r}"
            for name in after
            if name not in RESUMABLE_CHANGES and before[name] != after[name]
            and not (name == "precision" and after[name] == "auto")  # auto: whatever the run chose
        ]


def _from_before_layouts(saved: TrainConfig) -> TrainConfig:
    """A resolved config.json written before layouts, crops and decoders: a pairs run on crops of its image size, the pyramid decoder."""
    return dataclasses.replace(saved, layout=saved.layout or "pairs", crop_size=saved.crop_size or saved.image_size,
                               decoder=saved.decoder or _default_decoder(saved.preset))


def _default_decoder(preset: str) -> str | None:
    return DECODERS[0] if preset in LITE_VARIANTS else None


def _default_stride(preset: str, defaults: dict) -> int | None:
    if preset == "fast" and defaults["output_stride"]:
        return defaults["output_stride"]
    return OUTPUT_STRIDES[preset][0] if preset in OUTPUT_STRIDES else None


def _is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_address(value) -> bool:
    """HOST:PORT with a port number."""
    host, _, port = str(value).rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def config_field_help() -> dict[str, str]:
    """Each TrainConfig field's comment in the source, the help text of its flag.

    Returns:
        field name -> comment (empty when the source is not available).
    """
    import inspect

    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):
        return {}
    help_texts = {}
    for line in source.splitlines():
        stripped = line.strip()
        name, colon, rest = stripped.partition(":")
        if colon and name.isidentifier() and "  # " in rest:
            help_texts[name] = rest.split("  # ", 1)[1].strip()
    return help_texts


def config_field_types() -> dict[str, Any]:
    """Each TrainConfig field's resolved type annotation (``int | None`` etc.)."""
    return typing.get_type_hints(TrainConfig)
