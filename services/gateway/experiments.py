"""Experiments: which configuration (arm) serves a search, decided by a stable hash.

    experiments file (JSON or YAML, IMAGESEARCH_GATEWAY_EXPERIMENTS_FILE)
      experiments:
        - name: fusion-dec               # unique, no "/"
          tenants: [acme]                # omitted: every tenant
          unit: caller                   # caller (API key subject / token sub) or session (x-session-id)
          arms:
            - {name: control, share: 0.5}
            - {name: keyword-heavy, share: 0.5, alpha: 0.3, rerank: {mmr_lambda: 0.9}}
            - ...                        # an arm may also set fusion: adaptive | relative_score | ranked

A tenant runs at most one experiment at a time (overlapping tenant sets are refused at load). The arm of
one search is the first arm whose cumulative share exceeds u = sha256(json [experiment, tenant, unit])
read as a fraction in [0, 1): the same caller (or session) always gets the same arm, different callers
spread over the arms in proportion to their shares, and nothing is stored to remember it. The arm is
named "<experiment>/<arm>" in responses, metrics and audit lines; searches outside any experiment are
served by "control" with the server's configuration.

An arm's overrides replace the server's defaults; what a caller sets explicitly on a request still wins
(an explicit alpha or fusion is a different question, not a different arm's answer to the same one).
An arm may name a model version (`model_package: "name:version"`, a canary): its searches are encoded
by that version's encoder and search its vectors, when the tenant holds them (else the active version
answers); the gateway refuses at start a version it has no encoder for (docs/LIFECYCLE.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.errors import InvalidArgument
from services.gateway.auth import Principal
from services.gateway.domain import ModelRef, RerankOptions, SearchQuery
from services.gateway.model_refs import parse_model

CONTROL = "control"
SESSION_HEADER = "x-session-id"
MAX_SESSION_CHARS = 128
_SHARE_TOLERANCE = 1e-6


class ExperimentsFileError(ValueError):
    """The experiments file cannot be used; the message names the file and what to fix."""


class _RerankOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    disable: bool | None = None
    candidate_window: int | None = Field(None, ge=1, le=1000)
    text_weight: float | None = Field(None, ge=0, le=1)
    mmr_lambda: float | None = Field(None, ge=0, le=1)
    duplicate_threshold: float | None = Field(None, ge=0, le=1)
    freshness_weight: float | None = Field(None, ge=0, le=1)
    popularity_weight: float | None = Field(None, ge=0, le=1)


class _ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    share: float = Field(gt=0, le=1)
    alpha: float | None = Field(None, ge=0, le=1)
    rerank: _RerankOverrides = _RerankOverrides()
    fusion: Literal["adaptive", "relative_score", "ranked"] | None = None  # domain.FUSIONS
    model_package: str | None = None


class _ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    tenants: list[str] | None = None
    unit: Literal["caller", "session"] = "caller"
    arms: list[_ArmSpec] = Field(min_length=1)


class _ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: list[_ExperimentSpec] = []


@dataclass(frozen=True)
class Arm:
    """One configuration: `name` is the qualified "<experiment>/<arm>" (or "control")."""

    name: str
    share: float = 1.0
    alpha: float | None = None
    rerank: RerankOptions = field(default_factory=RerankOptions)
    fusion: str | None = None  # one of domain.FUSIONS; None: the caller's, package's or settings' choice
    model: ModelRef | None = None  # a canary: the model version this arm's searches use

    def apply(self, q: SearchQuery) -> SearchQuery:
        """The query as this arm serves it: its overrides stand in for the server's defaults, the
        caller's explicit values stay."""
        own = q.rerank
        arm = self.rerank

        def pick(mine: float | None, theirs: float | None) -> float | None:
            return mine if mine is not None else theirs

        rerank = RerankOptions(
            disable=own.disable or arm.disable,
            candidate_window=own.candidate_window
            if own.candidate_window is not None
            else arm.candidate_window,
            text_weight=pick(own.text_weight, arm.text_weight),
            mmr_lambda=pick(own.mmr_lambda, arm.mmr_lambda),
            duplicate_threshold=pick(own.duplicate_threshold, arm.duplicate_threshold),
            freshness_weight=pick(own.freshness_weight, arm.freshness_weight),
            popularity_weight=pick(own.popularity_weight, arm.popularity_weight),
        )
        fusion = q.fusion if q.fusion is not None else self.fusion
        model = q.model if q.model is not None else self.model
        return replace(q, alpha=pick(q.alpha, self.alpha), fusion=fusion, rerank=rerank, model=model)


CONTROL_ARM = Arm(CONTROL)


@dataclass(frozen=True)
class Experiment:
    name: str
    tenants: frozenset[str] | None  # None = every tenant
    unit: str  # "caller" or "session"
    arms: tuple[Arm, ...]

    def applies_to(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    def arm_for(self, tenant: str, unit: str) -> Arm:
        u = unit_fraction(self.name, tenant, unit)
        cumulative = 0.0
        for arm in self.arms:
            cumulative += arm.share
            if u < cumulative:
                return arm
        return self.arms[-1]  # shares sum to 1 within rounding: u lands in the last arm


def unit_fraction(experiment: str, tenant: str, unit: str) -> float:
    """sha256 of the (experiment, tenant, unit) triple as a fraction in [0, 1). JSON keeps the triple
    unambiguous whatever characters the names hold."""
    digest = hashlib.sha256(json.dumps([experiment, tenant, unit]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Assignment:
    arm: Arm
    experiment: str = ""  # "" for control outside any experiment
    unit: str = ""  # "caller" or "session"


class Experiments:
    """The loaded experiments; `assign` is pure (no state, no I/O)."""

    def __init__(self, experiments: tuple[Experiment, ...] = ()) -> None:
        self.experiments = experiments

    def __len__(self) -> int:
        return len(self.experiments)

    def models(self) -> set[ModelRef]:
        """The model versions canary arms name (each needs an encoder in the gateway)."""
        return {a.model for e in self.experiments for a in e.arms if a.model is not None}

    def assign(self, principal: Principal, session: str = "") -> Assignment:
        for exp in self.experiments:
            if exp.applies_to(principal.tenant):
                use_session = exp.unit == "session" and bool(session)
                unit = session[:MAX_SESSION_CHARS] if use_session else principal.subject
                arm = exp.arm_for(principal.tenant, unit)
                return Assignment(arm, exp.name, "session" if use_session else "caller")
        return Assignment(CONTROL_ARM)

    @classmethod
    def load(cls, path: Path | None) -> Experiments:
        if path is None:
            return cls()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ExperimentsFileError(f"experiments file {path}: cannot read it ({exc.strerror})") from None
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parse errors
            raise ExperimentsFileError(f"experiments file {path}: not valid JSON/YAML ({exc})") from None
        except Exception as exc:  # yaml.YAMLError is not a ValueError
            raise ExperimentsFileError(f"experiments file {path}: not valid YAML ({exc})") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: object, where: str = "experiments") -> Experiments:
        try:
            spec = _ExperimentsFile.model_validate(data if data is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ExperimentsFileError(f"{where}: {problems}") from None
        experiments = tuple(_experiment(e, where) for e in spec.experiments)
        _check_distinct(experiments, where)
        return cls(experiments)


def _experiment(e: _ExperimentSpec, where: str) -> Experiment:
    names = [a.name for a in e.arms]
    if len(set(names)) != len(names):
        raise ExperimentsFileError(f"{where}: experiment {e.name!r} names an arm twice ({names})")
    total = sum(a.share for a in e.arms)
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        raise ExperimentsFileError(
            f"{where}: the shares of experiment {e.name!r} add up to {total:g}; they must add up to 1"
        )
    models: dict[str, ModelRef] = {}
    for a in e.arms:
        if a.model_package is not None:
            try:
                models[a.name] = parse_model(a.model_package)
            except InvalidArgument:
                raise ExperimentsFileError(
                    f"{where}: arm {e.name}/{a.name} sets model_package {a.model_package!r}; a model "
                    "version is NAME:VERSION (or NAME@VERSION)"
                ) from None
    arms = tuple(
        Arm(
            name=f"{e.name}/{a.name}",
            share=a.share,
            alpha=a.alpha,
            rerank=RerankOptions(**{**a.rerank.model_dump(exclude_none=True)}),
            fusion=a.fusion,
            model=models.get(a.name),
        )
        for a in e.arms
    )
    tenants = frozenset(e.tenants) if e.tenants is not None else None
    return Experiment(e.name, tenants, e.unit, arms)


def _check_distinct(experiments: tuple[Experiment, ...], where: str) -> None:
    seen: dict[str, str] = {}
    for exp in experiments:
        if exp.name in seen:
            raise ExperimentsFileError(f"{where}: experiment {exp.name!r} is defined twice")
        seen[exp.name] = exp.name
    for i, a in enumerate(experiments):
        for b in experiments[i + 1 :]:
            if a.tenants is None or b.tenants is None:
                shared = "every tenant"
            elif a.tenants & b.tenants:
                shared = f"tenants {sorted(a.tenants & b.tenants)}"
            else:
                continue
            raise ExperimentsFileError(
                f"{where}: experiments {a.name!r} and {b.name!r} both apply to {shared}; a tenant runs "
                "one experiment at a time"
            )
