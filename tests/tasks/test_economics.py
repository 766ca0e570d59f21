"""The economics rule (tasks/economics.py): adopt what a policy update put in force unless the
run gives its economics explicitly; say so either way."""

from __future__ import annotations

from configs.settings import EconomicsConfig, load_config
from tasks.economics import InForceEconomics, flatten, resolve_economics, unflatten

FILE = EconomicsConfig().model_dump(mode="json")  # contact cost 15 USD, save rate 0.25
UPDATE = "a" * 64


def _pu_in_force(cost: float = 20.0) -> InForceEconomics:
    values = flatten(FILE) | {"contact_cost_usd": cost}
    return InForceEconomics(values, "policy-update", UPDATE, {"contact_cost_usd": 15.0})


def test_economics_flatten_round_trips() -> None:
    assert unflatten(flatten(FILE)) == FILE


def test_economics_file_with_replaced_value_adopts_policy_update() -> None:
    res = resolve_economics(FILE, explicit=frozenset(), in_force=_pu_in_force())
    assert res.values["contact_cost_usd"] == 20.0
    assert res.lineage.source == "policy-update" and res.lineage.set_by_record == UPDATE
    assert res.lineage.adopted == ["contact_cost_usd"] and res.lineage.changed == []
    assert res.lineage.replaced == {"contact_cost_usd": 15.0}  # carried to later runs
    assert "adopted contact_cost_usd=20 (config file has 15)" in res.message


def test_economics_explicit_override_reverts_and_says_so() -> None:
    res = resolve_economics(
        FILE, explicit=frozenset({"contact_cost_usd"}), in_force=_pu_in_force()
    )
    assert res.values["contact_cost_usd"] == 15.0 and res.lineage.source == "override"
    (change,) = res.lineage.changed
    assert (change.key, change.in_force, change.used) == ("contact_cost_usd", 20.0, 15.0)
    assert change.set_by_record == UPDATE and res.lineage.replaced == {}
    assert "REVERTS contact_cost_usd 20 -> 15" in res.message


def test_economics_file_differing_from_both_is_used_and_reported() -> None:
    res = resolve_economics(
        FILE | {"contact_cost_usd": 18.0}, explicit=frozenset(), in_force=_pu_in_force()
    )
    assert res.values["contact_cost_usd"] == 18.0 and res.lineage.source == "config"
    assert "CHANGES contact_cost_usd 20 -> 18 (from the config file" in res.message


def test_economics_policy_update_records_what_it_replaced() -> None:
    in_force = InForceEconomics(flatten(FILE), "config", "b" * 64, {})
    res = resolve_economics(
        FILE | {"contact_cost_usd": 20.0},
        explicit=frozenset({"contact_cost_usd"}),
        in_force=in_force,
        policy_update=True,
    )
    assert res.lineage.replaced == {"contact_cost_usd": 15.0}
    assert res.lineage.source == "override"


def test_economics_config_in_force_is_not_adopted() -> None:
    """Economics set by a promotion's config (no policy update) never override the file."""
    in_force = InForceEconomics(flatten(FILE) | {"save_rate": 0.3}, "config", "c" * 64, {})
    res = resolve_economics(FILE, explicit=frozenset(), in_force=in_force)
    assert res.values["save_rate"] == 0.25 and res.lineage.adopted == []
    assert "CHANGES save_rate 0.3 -> 0.25" in res.message


def test_economics_explicit_keys_come_from_env_and_overrides() -> None:
    config = load_config(
        None,
        overrides=["economics.contact_cost_usd=20", "bootstrap.resamples=100"],
        environ={"BAYESPILOT__ECONOMICS__CUSTOMER_VALUE__MULTIPLIER": "2"},
    )
    assert config.explicit_economics == {"contact_cost_usd", "customer_value.multiplier"}
    assert load_config(None, environ={}).explicit_economics == frozenset()
