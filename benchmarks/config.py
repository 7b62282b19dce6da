"""Experiment configs: YAML files in ``configs/``, validated into typed dataclasses.

A config is one table of the suite: the registry models of its rows, the datasets of the
published table, the documented training settings (the ``paper`` profile) with their source,
and the overrides of the cheaper profiles. Every key is checked: an unknown key, a wrong type
or a missing field is a :class:`~benchmarks.errors.ConfigError` naming the file, the key and
what was expected.

Example:
    >>> from benchmarks.config import load_config
    >>> config = load_config("configs/cifar.yaml")
    >>> config.resolve("quick").training.steps > 0
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks.errors import ConfigError

__all__ = [
    "MAX_SEED",
    "PRECISIONS",
    "PROFILES",
    "Config",
    "ProbeSettings",
    "ProfileOverrides",
    "ResolvedConfig",
    "TrainSettings",
    "content_digest",
    "load_config",
]

PROFILES = ("paper", "quick", "smoke")
OPTIMIZERS = ("sgd", "adam", "adamax")
LAYOUTS = ("", "ablation")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
MAX_SEED = 2**63 - 1  # the largest seed the suite mixes into its generators


@dataclass(frozen=True)
class TrainSettings:
    """Training hyperparameters of one profile (the ``paper`` profile is the documented one)."""

    optimizer: str
    learning_rate: float
    batch_size: int
    steps: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_milestones: list[int] = field(default_factory=list)
    lr_decay: float = 0.1
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    augment: bool = True
    train_examples: int | None = None
    test_examples: int | None = None
    image_size: int | None = None  # crop side of datasets read from image files (ImageNet)
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 (Glow, Flow++)
    grad_clip: float | None = None  # max global gradient norm
    ema_decay: float | None = None  # evaluate an exponential moving average of the weights
    weight_norm_l2: float = 0.0  # L2 on weight-norm scales (RealNVP: 5e-5)
    eval_samples: int = 1  # S (or k) of the importance-weighted bound at the final evaluation
    free_bits: float = 0.0  # VAE: KL floor in nats per group of latents (IAF paper)
    free_bits_groups: int = 1  # VAE: number of groups the latents are split into
    # How a step runs, not what it computes (excluded from the resume check):
    # "auto" (= "fp32"), "fp32" (IEEE float32, TF32 off), "tf32" (TF32 outside the exactly
    # inverted parts) or "bf16" (autocast); see benchmarks.core.loop.PRECISION_POLICY
    precision: str = "auto"
    channels_last: bool = False  # NHWC memory format for model and images
    compile: str = ""  # a torch.compile backend ("inductor"); "" trains eagerly


@dataclass(frozen=True)
class ProbeSettings:
    """Untrained measurements of a table's models at the published input size.

    ``python -m benchmarks probe`` builds each model for ``num_classes`` classes and measures,
    on random images of ``image_size`` pixels, one training step at batch 1 and at
    ``batch_size`` (the difference is the memory each extra image costs) and, for invertible
    models, the reconstruction error of ``inverse(representation(x))``.
    """

    image_size: int
    batch_size: int = 2
    num_classes: int = 1000


@dataclass(frozen=True)
class ProfileOverrides:
    """What a profile changes: its datasets, a note saying how it departs, training keys,
    and builder arguments per model (``model_args``, e.g. a smaller width on CPU)."""

    datasets: list[str] | None = None
    note: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_training: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] | None = None
    models: list[str] | None = None  # the rows this profile trains (default: all)


@dataclass(frozen=True)
class Config:
    """One experiment file: a table, its models and its training settings."""

    name: str
    title: str
    task: str
    source: str
    datasets: list[str]
    models: list[str]
    training: TrainSettings
    profiles: dict[str, ProfileOverrides] = field(default_factory=dict)
    probe: ProbeSettings | None = None
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_training: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])  # one run per seed
    layout: str = ""  # "ablation": a study table of seeds' mean and spread per variant
    path: str = ""

    def resolve(self, profile: str) -> ResolvedConfig:
        """Apply a profile's overrides to the documented settings."""
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        overrides = self.profiles.get(profile, ProfileOverrides())
        training = replace(self.training, **overrides.training)
        _check_training(training, f"{self.path}: profiles.{profile}")
        model_args = {name: dict(self.model_args.get(name, {})) for name in self.models}
        for name, args in overrides.model_args.items():
            model_args[name].update(args)
        per_model = {}
        for name in {*self.model_training, *overrides.model_training}:
            changes = {
                **self.model_training.get(name, {}),
                **overrides.training,
                **overrides.model_training.get(name, {}),
            }
            settings = replace(self.training, **changes)
            _check_training(settings, f"{self.path}: model_training.{name} ({profile})")
            per_model[name] = settings
        return ResolvedConfig(
            config=self,
            profile=profile,
            datasets=list(overrides.datasets or self.datasets),
            training=training,
            note=overrides.note,
            model_args=model_args,
            model_training=per_model,
            seeds=list(overrides.seeds if overrides.seeds is not None else self.seeds),
            models=list(overrides.models or self.models),
        )


@dataclass(frozen=True)
class ResolvedConfig:
    """A config with one profile applied: what the runner actually trains."""

    config: Config
    profile: str
    datasets: list[str]
    training: TrainSettings
    note: str = ""
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_training: dict[str, TrainSettings] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    models: list[str] = field(default_factory=list)

    def training_for(self, model: str) -> TrainSettings:
        """The settings ``model`` trains with: the config's, its ``model_training`` changes
        (e.g. Glow's Adamax beside RealNVP's Adam in one table), then the profile's."""
        return self.model_training.get(model, self.training)

    def as_params(self, model: str | None = None) -> dict[str, object]:
        """Flat ``key -> value`` view for MLflow params (``model``'s training settings)."""
        params: dict[str, object] = {
            "config": self.config.name,
            "config_path": self.config.path,
            "profile": self.profile,
            "source": self.config.source,
            "profile_note": self.note or "documented settings",
        }
        for key, value in dataclasses.asdict(
            self.training_for(model) if model else self.training
        ).items():
            params[f"training.{key}"] = value
        return params

    def with_training_overrides(self, changes: dict[str, Any]) -> ResolvedConfig:
        """The same runs with training keys changed for every model (command-line options
        such as ``--precision``); the values are checked like the config's."""
        hints = typing.get_type_hints(TrainSettings)
        for key, value in changes.items():
            if key not in hints:
                _unknown_key(key, list(hints), "command-line training override")
            _check_value(value, hints[key], f"command-line override {key}")
        training = replace(self.training, **changes)
        _check_training(training, "command-line overrides")
        per_model = {name: replace(s, **changes) for name, s in self.model_training.items()}
        return replace(self, training=training, model_training=per_model)

    def model_kwargs(self, model: str) -> dict[str, Any]:
        """Builder arguments of ``model`` in this profile (config-level, then profile)."""
        return dict(self.model_args.get(model, {}))

    def row_document(self, model: str, dataset: str) -> dict[str, Any]:
        """Everything that decides what one row (``model`` on ``dataset``) trains: the table,
        profile, source, training settings and builder arguments; not the file's path."""
        return {
            "table": self.config.name,
            "model": model,
            "dataset": dataset,
            "profile": self.profile,
            "profile_note": self.note,
            "source": self.config.source,
            "training": dataclasses.asdict(self.training_for(model)),
            "model_args": self.model_kwargs(model),
        }

    def row_digest(self, model: str, dataset: str) -> str:
        """A short SHA-256 of :meth:`row_document`: two runs share it exactly when they were
        made with the same resolved settings (the results record compares it).

        >>> resolved = load_config("configs/cifar.yaml").resolve("quick")
        >>> len(resolved.row_digest("resnet32", "digits"))
        16
        >>> resolved.row_digest("resnet32", "digits") == resolved.row_digest("revnet38", "digits")
        False
        """
        return content_digest(self.row_document(model, dataset))


def content_digest(document: object) -> str:
    """First 16 hex digits of the SHA-256 of ``document`` as canonical JSON (keys sorted).

    >>> content_digest({"b": 1, "a": [1, 2]}) == content_digest({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(document, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; raise :class:`ConfigError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        available = sorted(p.name for p in Path("configs").glob("*.yaml"))
        what = "is a folder, not a YAML file" if path.is_dir() else "not found"
        raise ConfigError(f"config file {str(path)!r} {what}. Configs in configs/: {available}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read as a YAML text file ({error})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    where = str(path)
    raw_profiles = raw.pop("profiles", {}) or {}
    raw_model_args = _check_model_args(raw.pop("model_args", {}) or {}, f"{where}: model_args")
    model_training = _check_model_training(raw.pop("model_training", {}) or {}, where)
    config = _build(Config, {**raw, "profiles": {}, "path": where}, where)
    config = replace(config, model_args=raw_model_args, model_training=model_training)
    profiles = {}
    if not isinstance(raw_profiles, dict):
        raise ConfigError(f"{where}: key 'profiles': expected a mapping of profile names")
    for name, body in raw_profiles.items():
        if name not in PROFILES:
            raise ConfigError(
                f"{where}: key 'profiles.{name}': unknown profile; expected one of "
                f"{', '.join(PROFILES)}"
            )
        profiles[name] = _build_profile(body or {}, f"{where}: profiles.{name}")
    config = replace(config, profiles=profiles)
    _check_training(config.training, f"{where}: training")
    if config.probe is not None:
        for key, value in dataclasses.asdict(config.probe).items():
            if value <= 0:
                raise ConfigError(f"{where}: 'probe.{key}' must be positive, got {value}")
    _check_names(config, where)
    _check_seeds(config.seeds, f"{where}: key 'seeds'")
    if config.layout not in LAYOUTS:
        raise ConfigError(
            f"{where}: key 'layout': {config.layout!r} is not a layout; use one of {LAYOUTS}"
        )
    for name in PROFILES:
        config.resolve(name)  # every profile must yield valid settings
    return config


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message (with a caret diagram) as one line with its position."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem is None or mark is None:
        return " ".join(str(error).split())
    context = getattr(error, "context", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (
        f" ({context})" if context else ""
    )


def _build_profile(body: object, where: str) -> ProfileOverrides:
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(body).__name__}")
    body = dict(body)
    datasets = body.pop("datasets", None)
    note = body.pop("note", "")
    model_args = body.pop("model_args", {})
    model_training = _check_model_training(body.pop("model_training", {}) or {}, where)
    seeds = body.pop("seeds", None)
    models = body.pop("models", None)
    hints = typing.get_type_hints(TrainSettings)
    training = {}
    for key, value in body.items():
        if key not in hints:
            extra = ["datasets", "note", "model_args", "model_training", "seeds", "models"]
            _unknown_key(key, [*hints, *extra], where)
        training[key] = _check_value(value, hints[key], f"{where}.{key}")
    return ProfileOverrides(
        datasets=_check_value(datasets, list[str] | None, f"{where}.datasets"),
        note=_check_value(note, str, f"{where}.note"),
        training=training,
        model_args=_check_model_args(model_args, f"{where}.model_args"),
        model_training=model_training,
        seeds=_check_seeds(seeds, f"{where}.seeds"),
        models=_check_value(models, list[str] | None, f"{where}.models"),
    )


def _check_seeds(value: object, where: str) -> list[int] | None:
    seeds = _check_value(value, list[int] | None, where)
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"{where}: expected a non-empty list of distinct seeds, got {seeds}")
    if seeds is not None and any(not 0 <= seed <= MAX_SEED for seed in seeds):
        raise ConfigError(f"{where}: seeds must be integers from 0 to 2**63 - 1, got {seeds}")
    return seeds


def _check_model_training(raw: object, where: str) -> dict[str, dict[str, Any]]:
    """Per-model training changes: every key a training key of the right type."""
    hints = typing.get_type_hints(TrainSettings)
    checked = {}
    for name, changes in _check_model_args(raw, f"{where}: model_training").items():
        checked[name] = {}
        for key, value in changes.items():
            if key not in hints:
                _unknown_key(f"model_training.{name}.{key}", list(hints), where)
            checked[name][key] = _check_value(
                value, hints[key], f"{where}: key 'model_training.{name}.{key}'"
            )
    return checked


def _check_model_args(value: object, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(
            f"{where}: expected a mapping of model name -> mapping of builder arguments, "
            f"got {_describe(value)}"
        )
    return {str(name): dict(args) for name, args in value.items()}


def _build(cls: type, data: object, where: str, prefix: str = "") -> Any:
    """Construct dataclass ``cls`` from ``data``, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.')}': expected a mapping")
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in hints:
            _unknown_key(prefix + str(key), [prefix + k for k in hints if k != "path"], where)
    values = {}
    for f in fields(cls):
        key = prefix + f.name
        if f.name not in data:
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if not has_default:
                raise ConfigError(
                    f"{where}: missing required key '{key}' ({_type_name(hints[f.name])})"
                )
            continue
        value = data[f.name]
        section = _dataclass_of(hints[f.name])
        if section is not None and value is not None:
            values[f.name] = _build(section, value, where, prefix=key + ".")
        else:
            values[f.name] = _check_value(value, hints[f.name], f"{where}: key '{key}'")
    return cls(**values)


def _dataclass_of(tp: object) -> type | None:
    """The dataclass of a ``Section`` or ``Section | None`` annotation, else None."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        sections = [arg for arg in typing.get_args(tp) if dataclasses.is_dataclass(arg)]
        return sections[0] if sections else None
    return None


def _unknown_key(key: str, allowed: list[str], where: str) -> typing.NoReturn:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"{where}: unknown key '{key}'{hint}; allowed keys: {', '.join(allowed)}")


def _type_name(tp: object) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _check_value(value: object, tp: object, where: str) -> Any:
    """Return ``value`` if it has type ``tp`` (ints are accepted as floats), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(
                f"{where}: expected a list of {_type_name(item_type)}, got {_describe(value)}"
            )
        return [_check_value(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"config schema uses unsupported type {tp!r}")  # a bug in this module


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_training(training: TrainSettings, where: str) -> None:
    if training.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"{where}: optimizer {training.optimizer!r} is not supported; use one of "
            f"{', '.join(OPTIMIZERS)}"
        )
    positive = (
        "learning_rate",
        "batch_size",
        "steps",
        "eval_every",
        "checkpoint_every",
        "log_every",
    )
    for key in positive:
        if getattr(training, key) <= 0:
            raise ConfigError(f"{where}: '{key}' must be positive, got {getattr(training, key)}")
    for key in ("train_examples", "test_examples", "image_size", "grad_clip", "eval_samples"):
        value = getattr(training, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{where}: '{key}' must be positive, got {value}")
    if training.precision not in PRECISIONS:
        raise ConfigError(
            f"{where}: 'precision' must be one of {', '.join(PRECISIONS)}, got "
            f"{training.precision!r}"
        )
    if training.free_bits < 0 or training.free_bits_groups < 1:
        raise ConfigError(f"{where}: 'free_bits' must be >= 0 and 'free_bits_groups' >= 1")
    if training.warmup_steps < 0 or training.weight_norm_l2 < 0:
        raise ConfigError(f"{where}: 'warmup_steps' and 'weight_norm_l2' must be >= 0")
    if training.ema_decay is not None and not 0 < training.ema_decay < 1:
        raise ConfigError(f"{where}: 'ema_decay' must be in (0, 1), got {training.ema_decay}")
    milestones = training.lr_milestones
    if milestones != sorted(milestones) or any(not 0 < m < training.steps for m in milestones):
        raise ConfigError(
            f"{where}: 'lr_milestones' must be increasing steps between 0 and steps="
            f"{training.steps}, got {milestones}"
        )


def _check_builder_types(builder: typing.Callable, args: dict[str, Any], where: str) -> None:
    """Each builder argument against the builder's type hint (``where`` ends in ``.<model>``).

    Hints this module cannot check (none, or a type outside its schema) are skipped; building
    the model on the ``meta`` device (:mod:`benchmarks.preflight`) catches the rest.
    """
    try:
        hints = typing.get_type_hints(builder)
    except (NameError, TypeError):  # an annotation that does not resolve: nothing to check
        return
    for arg, value in args.items():
        if arg not in hints:
            continue
        try:
            _check_value(value, hints[arg], f"{where}.{arg}'")
        except TypeError:  # a hint outside the config schema's types
            continue


def _check_names(config: Config, where: str) -> None:
    import inspect

    from flows.registry import UnknownModelError, get_info

    for name in config.models:
        try:
            info = get_info(name)
        except UnknownModelError as error:
            raise ConfigError(f"{where}: key 'models': {error}") from None
        if info.task != config.task:
            raise ConfigError(
                f"{where}: model {name!r} is a {info.task} model, this config's task is "
                f"{config.task!r}"
            )
    sections = [("model_args", config.model_args)]
    trained = [("model_training", config.model_training)] + [
        (f"profiles.{p}.model_training", body.model_training) for p, body in config.profiles.items()
    ]
    for profile_name, body in config.profiles.items():
        for name in body.models or []:
            if name not in config.models:
                raise ConfigError(
                    f"{where}: key 'profiles.{profile_name}.models': {name!r} is not a model of "
                    f"this config ({', '.join(config.models)})"
                )
    for key, section in trained:
        for name in section:
            if name not in config.models:
                raise ConfigError(
                    f"{where}: key '{key}.{name}': not a model of this config "
                    f"({', '.join(config.models)})"
                )
    sections += [
        (f"profiles.{p}.model_args", body.model_args) for p, body in config.profiles.items()
    ]
    for key, model_args in sections:
        for name, args in model_args.items():
            if name not in config.models:
                raise ConfigError(
                    f"{where}: key '{key}.{name}': not a model of this config "
                    f"({', '.join(config.models)})"
                )
            builder = get_info(name).builder
            accepted = inspect.signature(builder).parameters
            for arg in args:
                if arg not in accepted:
                    _unknown_key(f"{key}.{name}.{arg}", list(accepted), where)
            _check_builder_types(builder, args, f"{where}: key '{key}.{name}")
