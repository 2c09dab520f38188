"""Experiment arms: stable assignment, shares, scope, overrides, and the load-time refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.gateway.auth import Principal
from services.gateway.domain import RerankOptions, SearchQuery
from services.gateway.experiments import CONTROL, Experiments, ExperimentsFileError, unit_fraction


def _principal(subject: str, tenant: str = "acme") -> Principal:
    return Principal(subject, tenant, frozenset({"search"}), 0.5, None, "api-key")


def _experiments(
    *arms: dict[str, object], unit: str = "caller", tenants: list[str] | None = None
) -> Experiments:
    exp: dict[str, object] = {"name": "exp1", "unit": unit, "arms": list(arms)}
    if tenants is not None:
        exp["tenants"] = tenants
    return Experiments.parse({"experiments": [exp]})


def test_assignment_is_stable_across_calls_and_loads() -> None:
    spec = ({"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "alpha": 0.2})
    first = _experiments(*spec)
    again = _experiments(*spec)
    for i in range(200):
        p = _principal(f"caller-{i}")
        arm = first.assign(p).arm.name
        assert arm in ("exp1/a", "exp1/b")
        assert first.assign(p).arm.name == arm
        assert again.assign(p).arm.name == arm  # nothing remembered: a fresh load agrees


def test_shares_split_callers_in_proportion() -> None:
    exps = _experiments({"name": "small", "share": 0.2}, {"name": "big", "share": 0.8})
    n = 5000
    small = sum(exps.assign(_principal(f"user-{i}")).arm.name == "exp1/small" for i in range(n))
    assert abs(small / n - 0.2) < 0.02


def test_unit_fraction_depends_on_experiment_tenant_and_unit() -> None:
    u = unit_fraction("exp", "acme", "alice")
    assert 0.0 <= u < 1.0
    assert u == unit_fraction("exp", "acme", "alice")
    assert len({u, unit_fraction("exp2", "acme", "alice"), unit_fraction("exp", "globex", "alice")}) == 3
    # The triple is unambiguous: moving a separator between fields changes the hash.
    assert unit_fraction("a/b", "c", "d") != unit_fraction("a", "b/c", "d")


def test_session_unit_uses_the_session_and_falls_back_to_the_caller() -> None:
    exps = _experiments({"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}, unit="session")
    alice = _principal("alice")
    arms = {exps.assign(alice, f"session-{i}").arm.name for i in range(50)}
    assert arms == {"exp1/a", "exp1/b"}  # one caller, many sessions: both arms
    fallback = exps.assign(alice)
    assert fallback.unit == "caller"
    assert fallback.arm.name == exps.assign(alice).arm.name


def test_tenants_outside_the_experiment_get_control() -> None:
    exps = _experiments({"name": "only", "share": 1.0, "alpha": 0.1}, tenants=["acme"])
    assert exps.assign(_principal("gus", "globex")).arm.name == CONTROL
    assigned = exps.assign(_principal("alice", "acme"))
    assert (assigned.arm.name, assigned.experiment) == ("exp1/only", "exp1")
    assert Experiments().assign(_principal("alice")).arm.name == CONTROL


def test_arm_overrides_defaults_but_not_the_callers_explicit_values() -> None:
    exps = _experiments(
        {"name": "x", "share": 1.0, "alpha": 0.3, "rerank": {"mmr_lambda": 0.9, "candidate_window": 50}}
    )
    arm = exps.assign(_principal("alice")).arm
    served = arm.apply(SearchQuery(text="cat"))
    assert served.alpha == 0.3
    assert served.rerank.mmr_lambda == 0.9 and served.rerank.candidate_window == 50
    explicit = arm.apply(SearchQuery(text="cat", alpha=0.8, rerank=RerankOptions(mmr_lambda=0.5)))
    assert explicit.alpha == 0.8
    assert explicit.rerank.mmr_lambda == 0.5 and explicit.rerank.candidate_window == 50


@pytest.mark.parametrize("fusion", ["adaptive", "relative_score", "ranked"])
def test_an_arms_fusion_stands_in_for_the_default_but_not_for_the_callers(fusion: str) -> None:
    exps = _experiments({"name": "f", "share": 1.0, "fusion": fusion})
    arm = exps.assign(_principal("alice")).arm
    assert arm.fusion == fusion
    assert arm.apply(SearchQuery(text="cat")).fusion == fusion
    assert arm.apply(SearchQuery(text="cat", fusion="relative_score")).fusion == "relative_score"
    assert Experiments().assign(_principal("alice")).arm.apply(SearchQuery(text="cat")).fusion is None


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        (
            [{"name": "e", "arms": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]}],
            "shares of experiment 'e' add up to 0.9; they must add up to 1",
        ),
        (
            [{"name": "e", "arms": [{"name": "a", "share": 1.0, "model_package": "photo"}]}],
            "a model version is NAME:VERSION",
        ),
        (
            [{"name": "e", "arms": [{"name": "a", "share": 1.0, "fusion": "rrf"}]}],
            "experiments.0.arms.0.fusion: Input should be 'adaptive', 'relative_score' or 'ranked'",
        ),
        (
            [{"name": "e", "arms": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}],
            "names an arm twice",
        ),
        (
            [
                {"name": "e", "tenants": ["acme"], "arms": [{"name": "a", "share": 1.0}]},
                {"name": "f", "tenants": ["acme", "globex"], "arms": [{"name": "a", "share": 1.0}]},
            ],
            "experiments 'e' and 'f' both apply to tenants ['acme']",
        ),
        (
            [{"name": "e", "arms": [{"name": "a", "share": 1.0, "alpah": 0.3}]}],
            "experiments.0.arms.0.alpah: Extra inputs are not permitted",
        ),
        (
            [{"name": "e", "arms": [{"name": "a", "share": 1.0, "alpha": 1.5}]}],
            "experiments.0.arms.0.alpha: Input should be less than or equal to 1",
        ),
        ([{"name": "e/x", "arms": [{"name": "a", "share": 1.0}]}], "experiments.0.name: String should match"),
    ],
)
def test_bad_files_are_refused_with_what_to_fix(experiments: list[object], message: str) -> None:
    with pytest.raises(ExperimentsFileError, match=None) as info:
        Experiments.parse({"experiments": experiments}, "exp.json")
    assert message in str(info.value)
    assert str(info.value).startswith("exp.json: ")


def test_load_reads_json_and_yaml(tmp_path: Path) -> None:
    doc = {"experiments": [{"name": "e", "unit": "session", "arms": [{"name": "a", "share": 1.0}]}]}
    as_json = tmp_path / "exp.json"
    as_json.write_text(json.dumps(doc))
    as_yaml = tmp_path / "exp.yaml"
    as_yaml.write_text(
        "experiments:\n  - name: e\n    unit: session\n    arms:\n      - {name: a, share: 1.0}\n"
    )
    for path in (as_json, as_yaml):
        loaded = Experiments.load(path)
        assert len(loaded) == 1 and loaded.experiments[0].unit == "session"
    assert len(Experiments.load(None)) == 0
    with pytest.raises(ExperimentsFileError, match="cannot read it"):
        Experiments.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ExperimentsFileError, match="not valid JSON/YAML"):
        Experiments.load(broken)


def test_a_canary_arm_names_a_model_version_and_sets_it_on_its_queries() -> None:
    from services.gateway.domain import ModelRef, SearchQuery

    exps = Experiments.parse(
        {
            "experiments": [
                {
                    "name": "canary",
                    "arms": [
                        {"name": "control", "share": 0.5},
                        {"name": "photo", "share": 0.5, "model_package": "imagesearch-photo@0.1.0"},
                    ],
                }
            ]
        }
    )
    photo = ModelRef("imagesearch-photo", "0.1.0")
    assert exps.models() == {photo}
    control, canary = exps.experiments[0].arms
    assert canary.apply(SearchQuery(text="x")).model == photo
    assert control.apply(SearchQuery(text="x")).model is None
