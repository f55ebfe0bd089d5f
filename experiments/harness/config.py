"""The configuration of one training run: frozen dataclasses, ``--set`` overrides, JSON round trip.

    cfg = Config(model=ModelConfig(...), data=DataConfig(...), train=TrainConfig(tokens=20_000_000))
    cfg = apply_overrides(cfg, ["model.d_model=256", "train.tokens=2e7", "mesh=data=2,fsdp=4"])
    to_dict(cfg) / from_dict(d) / config_hash(cfg)

Overrides are typed by the dataclass fields: an ``int`` field takes "2e7" (it must be integral),
a ``bool`` takes true/false/1/0, ``X | None`` takes "none", a tuple takes "1,2,3" or JSON, and an
``int | str`` field (a number or the name of a rule) takes either. An unknown key is a
``ValueError`` naming it and listing the keys that exist there.

Why hand-written (checked against tyro 1.0.17, draccus 0.11.6, dacite 1.9.2, cattrs 26.2.1): tyro
and draccus parse an ``int`` field with ``int()`` ("2e7" fails), tyro reports a multi-line panel
and keeps a field derived from the preset (``head_dim``, ``d_ff``) when ``d_model`` changes,
draccus builds from the class's defaults (no preset instance); cattrs silently structures
{"n": 1.5, "b": "false"} as n=1, b=True and needs a hook per ``int | str`` union; dacite accepts
``true`` for an int field and says neither the section nor the known keys of an unknown one.
fiddle and ml_collections parse overrides through absl flags. None keeps ``--set key=value`` with
these semantics, so the ~240 lines below stay.

Learning-rate and batch-size rules (``train.lr="deepseek"``, ``train.batch_size="deepseek"``) turn
the model size and token budget into a number; see ``LR_RULES`` and ``BATCH_RULES``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.harness.data import DataConfig
from models.quantization import QuantConfig
from models.transformer import ModelConfig

SCHEDULES = ("cosine", "wsd", "constant", "step")
COOLDOWNS = ("linear", "1-sqrt")  # the shape of a wsd cooldown (Hägele et al. 2024, Sec. 3)


def _deepseek_compute(n_params_nonembedding: int, tokens: int) -> float:
    """C = 6 N_nonembed D: the compute that DeepSeek's hyperparameter laws take as input."""
    return 6.0 * n_params_nonembedding * tokens


def deepseek_lr(n_params_nonembedding: int, tokens: int) -> float:
    """eta_opt = 0.3118 C^-0.1250 (DeepSeek LLM, Bi et al. 2024, arXiv:2401.02954, Eq. 1).

    Constants checked against a secondary source quoting the paper (the search tool held no copy
    of the paper itself); at DeepSeek-7B's budget (C ~ 6 x 6.9e9 x 2e12 = 8.3e22) they give
    eta = 4.3e-4 and B = 9.2M tokens, close to the 4.2e-4 and 2304 x 4096 = 9.4M tokens the
    paper reports using (Table 2, as recalled, not re-checked).

    DeepSeek measure C as M * D with M the non-embedding FLOPs per token including attention;
    here C = 6 N_nonembed D (attention left out), which is close for seq << 12 d_model. Fitted
    for 1e17 <= C <= 3e20 FLOPs with their data and a multi-step schedule: an extrapolation for
    CPU-sized runs, a starting point rather than an optimum.
    """
    return 0.3118 * _deepseek_compute(n_params_nonembedding, tokens) ** -0.1250


def deepseek_batch_tokens(n_params_nonembedding: int, tokens: int) -> float:
    """B_opt = 0.2920 C^0.3271 tokens per step (DeepSeek LLM, arXiv:2401.02954, Eq. 1)."""
    return 0.2920 * _deepseek_compute(n_params_nonembedding, tokens) ** 0.3271


# rule name -> f(n_params_nonembedding, tokens) -> peak learning rate
LR_RULES: dict[str, Callable[[int, int], float]] = {"deepseek": deepseek_lr}
# rule name -> f(n_params_nonembedding, tokens) -> tokens per step (divided by seq_len, rounded)
BATCH_RULES: dict[str, Callable[[int, int], float]] = {"deepseek": deepseek_batch_tokens}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimization and bookkeeping of one run.

    tokens: total training tokens; steps = tokens // (batch_size * seq_len), at least 1.
    batch_size: global sequences per step, or the name of a rule in ``BATCH_RULES``.
    lr: peak learning rate, or the name of a rule in ``LR_RULES``.
    schedule: "cosine" (linear warmup, cosine decay to min_lr_ratio * lr), "wsd" (warmup,
      stable at lr, decay to min_lr_ratio * lr over the last decay_fraction of steps, shaped by
      ``cooldown``), "constant" (warmup, then lr), "step" (warmup, then lr times step_factor^k
      after the k-th of ``step_milestones``).
    warmup: warmup length: a fraction of the steps when < 1, else a number of steps.
    decay_fraction: the wsd cooldown's length as a fraction of the steps.
    decay_steps: the wsd cooldown's length in steps (0: use decay_fraction); what a branch of a
      stable run names, since a fraction rarely lands on the step a checkpoint holds.
    cooldown: the wsd cooldown's shape, "linear" or "1-sqrt" (lr - (lr - lr_min) sqrt(p), p the
      cooldown's progress; Hägele et al. 2024, arXiv:2405.18392, Sec. 3).
    step_milestones: fractions of the steps (increasing, in (0, 1)) after which a "step"
      schedule multiplies the rate by step_factor.
    step_factor: the step schedule's factor per milestone, in (0, 1].
    parent: a *branch*: the run id (directory name, a sibling of this run's workdir) of a stable
      run whose checkpoint at the step where this run's cooldown starts (steps - decay steps)
      this run starts from: model, optimizer and data-iterator state. The branch equals this
      config trained straight through (``experiments.harness.train``); "" (the default): not a
      branch.
    keep_every: checkpoints at multiples of this many steps are kept for good (orbax's
      keep_period), so that branches can leave from them; 0: only the last max_checkpoints.
    keep_steps: steps (increasing, >= 1) at which a checkpoint is saved and kept for good: the
      steps a planned set of branches leaves from (an isoFLOP grid's cooldown branches leave at
      steps no one period divides).
    curve_every: a dense curve: every this many tokens (at the first step that reaches a
      multiple), the eval loss and its SEM on the first ``curve_batches`` held-out batches go to
      metrics.jsonl as curve_loss / curve_loss_sem; 0: none.
    curve_batches: held-out batches of a curve point (0: all of them).
    weight_decay: AdamW decoupled weight decay (multiplied by the learning rate, as optax does),
      applied to matrices (ndim >= 2) only.
    grad_clip: global-norm clipping threshold (0 disables).
    z_loss: coefficient of the z-loss  z * mean(logsumexp(logits)^2)  (PaLM, Chowdhery et al.
      2022, Sec. 5); 0 disables.
    divergence_ratio, divergence_window: the run stops as "diverged" when a training loss is
      NaN/inf, or when the median of the last divergence_window step losses exceeds
      divergence_ratio times the lowest such median so far (``train.DivergenceMonitor``).
    log_every / checkpoint_every / eval_every: in steps; checkpoint_every = 0 saves only at the
      end, eval_every = 0 evaluates only at the end.
    eval_batch_size: sequences per held-out batch (the number of batches is set by the data).
    """

    tokens: int = 1_000_000
    batch_size: int | str = 32
    lr: float | str = 3e-3
    schedule: str = "cosine"
    warmup: float = 0.05
    decay_fraction: float = 0.2
    decay_steps: int = 0
    cooldown: str = "linear"
    step_milestones: tuple[float, ...] = ()
    step_factor: float = 0.1
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    z_loss: float = 0.0
    seed: int = 0
    divergence_ratio: float = 3.0
    divergence_window: int = 7
    log_every: int = 10
    checkpoint_every: int = 500
    eval_every: int = 0
    eval_batch_size: int = 32
    max_checkpoints: int = 2
    parent: str = ""
    keep_every: int = 0
    keep_steps: tuple[int, ...] = ()
    curve_every: int = 0
    curve_batches: int = 0

    def __post_init__(self):
        def fail(name, why):
            raise ValueError(f"train.{name}={getattr(self, name)!r}: {why}")

        if self.tokens <= 0:
            fail("tokens", "must be positive")
        if isinstance(self.batch_size, str):
            if self.batch_size not in BATCH_RULES:
                fail("batch_size", f"unknown rule; rules: {sorted(BATCH_RULES)} or an integer")
        elif self.batch_size <= 0:
            fail("batch_size", "must be positive")
        if isinstance(self.lr, str):
            if self.lr not in LR_RULES:
                fail("lr", f"unknown rule; rules: {sorted(LR_RULES)} or a number")
        elif not (math.isfinite(self.lr) and self.lr > 0):
            fail("lr", "must be a positive finite number")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"must be one of {SCHEDULES}")
        if self.warmup < 0:
            fail("warmup", "must be >= 0")
        if not 0 <= self.decay_fraction <= 1:
            fail("decay_fraction", "must be in [0, 1]")
        if self.cooldown not in COOLDOWNS:
            fail("cooldown", f"must be one of {COOLDOWNS}")
        ms = tuple(self.step_milestones)
        if any(not 0 < m < 1 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            fail("step_milestones", "must be increasing fractions of the steps, in (0, 1)")
        ks = tuple(self.keep_steps)
        if any(k < 1 for k in ks) or any(b <= a for a, b in zip(ks, ks[1:])):
            fail("keep_steps", "must be increasing steps, each >= 1")
        if not 0 < self.step_factor <= 1:
            fail("step_factor", "must be in (0, 1]")
        if self.parent and self.schedule != "wsd":
            fail("parent", f"a branch trains a wsd cooldown; schedule={self.schedule!r} "
                 "cannot start from a stable run's checkpoint")
        if not 0 <= self.min_lr_ratio <= 1:
            fail("min_lr_ratio", "must be in [0, 1]")
        for name in ("weight_decay", "grad_clip", "z_loss", "eps"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                fail(name, "must be in [0, 1)")
        if self.divergence_ratio <= 1:
            fail("divergence_ratio", "must be > 1")
        for name in ("log_every", "eval_batch_size", "max_checkpoints", "divergence_window"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        for name in ("decay_steps", "keep_every", "curve_every", "curve_batches"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0 (0: only at the end)")


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: the model, the data, the optimization, and the mesh ("data=2,fsdp=2,tensor=2";
    "" puts every device on the data axis).

    quant: quantization-aware training (`models.quantization.QuantConfig`: weights, activations
      and keys/values fake-quantized in the forward pass, straight-through gradients; the params
      stay float). Unset (the default), the run trains in its model dtype and ``config_hash``
      leaves the field out, so float runs keep their ids.
    sharding_tolerance: the run fails before training when a device would hold more than
    (1 + tolerance) x the ideal parameter bytes, total / (fsdp x tensor) (MaxText's check,
    ``models.sharding.check_sharding``); None opts out (a warning instead). Like the mesh, it
    does not change the numbers, so ``config_hash`` leaves it out.
    """

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = TrainConfig()
    mesh: str = ""
    quant: QuantConfig = QuantConfig()
    sharding_tolerance: float | None = 0.02

    def __post_init__(self):
        if self.quant.method != "rtn":
            raise ValueError(f"quant.method={self.quant.method!r}: quantization-aware training rounds to "
                             "nearest ('rtn'); GPTQ is a post-training method")
        tol = self.sharding_tolerance
        if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"sharding_tolerance={tol!r}: must be a number >= 0, or None to opt out")


# ----------------------------------------------------------------------------- typed values


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _union_args(tp) -> tuple | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = float(text)  # "2e7", "1.5e3"
        if not (math.isfinite(value) and value == int(value)):
            raise ValueError(f"{text!r} is not an integer") from None
        return int(value)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def coerce(text: str, tp: Any) -> Any:
    """Parse the command-line text ``text`` as a value of the annotated type ``tp``."""
    members = _union_args(tp)
    if members is not None:
        if type(None) in members and text.strip().lower() in ("none", "null"):
            return None
        errors = []
        # numbers before strings, so "3e-3" is a float in a `float | str` field
        for member in sorted((m for m in members if m is not type(None)), key=lambda m: m is str):
            try:
                return coerce(text, member)
            except (ValueError, TypeError) as err:
                errors.append(str(err))
        raise ValueError(f"{text!r} fits none of {tp}: {'; '.join(errors)}")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        for choice in typing.get_args(tp):
            if str(choice) == text:
                return choice
        raise ValueError(f"{text!r} is not one of {typing.get_args(tp)}")
    if origin in (tuple, list):
        stripped = text.strip()
        parts = json.loads(stripped) if stripped.startswith("[") else [
            p for p in stripped.strip("()").split(",") if p.strip()]
        args = typing.get_args(tp)
        item_type = args[0] if args else str
        items = [coerce(str(p).strip(), item_type) for p in parts]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        return _parse_bool(text)
    if tp is int:
        return _parse_int(text)
    if tp is float:
        return float(text)
    if tp is str:
        return text
    if tp is Any:
        return json.loads(text)
    raise TypeError(f"cannot parse a value of type {tp} from the command line")


def _check_json_value(value: Any, tp: Any, where: str) -> Any:
    """Rebuild a typed value from its JSON form (config.json), checking it against ``tp``."""
    if _is_dataclass_type(tp):
        return _from_dict(tp, value, where)
    members = _union_args(tp)
    if members is not None:
        if value is None and type(None) in members:
            return None
        for member in members:
            if member is type(None):
                continue
            try:
                return _check_json_value(value, member, where)
            except (ValueError, TypeError):
                continue
        raise ValueError(f"{where}: {value!r} fits none of {tp}")
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        items = [_check_json_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or 'config'}: expected an object, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ValueError(
            f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(types_)}")
    kwargs = {name: _check_json_value(value, types_[name], f"{where}.{name}".lstrip("."))
              for name, value in data.items()}
    return cls(**kwargs)


# ----------------------------------------------------------------------------- public API


def to_dict(cfg) -> dict:
    """Plain JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    def convert(value):
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return convert(cfg)


def from_dict(data: Mapping[str, Any], cls=Config):
    """Inverse of ``to_dict``: typed, validated; ``ValueError`` on unknown keys or bad types.

    Missing keys take the dataclass defaults (so older config.json files stay readable).
    """
    return _from_dict(cls, data, "")


NOT_HASHED = ("sharding_tolerance",)  # top-level fields that never change a run's numbers
# Fields added after runs existed, left out of the hash while they hold their "off" value, so every
# earlier run keeps its id and its checkpoints (a field that is set changes the hash, as it should).
HASHED_ONLY_WHEN_SET = {("data", "mixture"): lambda v: not v,
                        ("data", "unique_tokens"): lambda v: v is None,
                        ("quant",): lambda v: not QuantConfig(**v).enabled,
                        # the schedule, branch and curve fields (issue 21): off at their defaults
                        **{("train", name): (lambda v, d=default: v == d)
                           for name, default in (("decay_steps", 0), ("cooldown", "linear"),
                                                 ("step_milestones", []), ("step_factor", 0.1),
                                                 ("parent", ""), ("keep_every", 0), ("keep_steps", []),
                                                 ("curve_every", 0), ("curve_batches", 0))}}


def config_hash(cfg) -> str:
    """First 12 hex digits of the SHA-256 of the canonical (sorted-key) JSON of the config,
    without the fields of ``NOT_HASHED``, and without those of ``HASHED_ONLY_WHEN_SET`` while they
    hold their "off" value (so adding them kept every earlier hash)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in NOT_HASHED}
    for path, is_off in HASHED_ONLY_WHEN_SET.items():
        parent = data
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and is_off(parent[path[-1]]):
            del parent[path[-1]]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def apply_overrides(cfg, overrides: Sequence[str]):
    """Apply "a.b.c=value" strings to a frozen config, typed by the dataclass fields.

    ``mesh=data=2,fsdp=4`` splits at the first '=' only. Raises ``ValueError`` naming the key when
    it does not exist (listing those that do) or when the value does not parse.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value, e.g. train.tokens=2e7")
        cfg = _replace_path(cfg, key.split("."), text.strip(), key)
    return cfg


def _replace_path(obj, path: list[str], text: str, full_key: str):
    name, rest = path[0], path[1:]
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"override {full_key!r}: {type(obj).__name__} has no fields")
    types_ = _field_types(type(obj))
    if name not in types_:
        prefix = full_key[: len(full_key) - len(".".join(path))]
        known = ", ".join(prefix + k for k in types_)
        raise ValueError(f"unknown config key {full_key!r}; known keys here: {known}")
    current = getattr(obj, name)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown config key {full_key!r}: {name!r} is not a section")
        return dataclasses.replace(obj, **{name: _replace_path(current, rest, text, full_key)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"config key {full_key!r} is a section; set one of its fields, "
                         f"e.g. {full_key}.{dataclasses.fields(current)[0].name}=...")
    try:
        value = coerce(text, types_[name])
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"config key {full_key!r}: cannot use {text!r} ({err})") from None
    try:
        return dataclasses.replace(obj, **{name: value, **_derived_fields(obj, name)})
    except ValueError as err:
        raise ValueError(f"config key {full_key!r}={text!r}: {err}") from None


def _derived_fields(obj, changing: str) -> dict:
    """{field: None} for the fields that ``__post_init__`` derived from a None default.

    ``ModelConfig(d_model=128)`` stores head_dim=32 and d_ff=344 (derived); a plain
    ``replace(d_model=256)`` would carry those over. A field counts as derived when resetting
    it to None derives the same value again, so it is re-derived after the override; a value
    set explicitly to something else is kept.
    """
    reset = {}
    for f in dataclasses.fields(obj):
        if f.name == changing or f.default is not None or getattr(obj, f.name) is None:
            continue
        try:
            probe = dataclasses.replace(obj, **{f.name: None})
        except (ValueError, TypeError):
            continue
        if getattr(probe, f.name) == getattr(obj, f.name):
            reset[f.name] = None
    return reset
