"""Tiers: validation with clear errors, lookup, and per-tier prices from the catalog."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costopt_core.errors import ConfigurationError
from costopt_core.pricing import PriceCatalog
from costopt_core.routing import Tier, Tiers

CATALOG = PriceCatalog.default()


def three() -> Tiers:
    return Tiers(
        [
            Tier("cheap", ("gpt-4o-mini",)),
            Tier("mid", ("gpt-4.1-mini", "gpt-4o-mini")),
            Tier("frontier", ("gpt-4o",)),
        ]
    )


def test_order_names_and_lookup() -> None:
    tiers = three()
    assert len(tiers) == 3
    assert tiers.names == ("cheap", "mid", "frontier")
    assert tiers.cheapest.name == "cheap" and tiers.frontier.primary == "gpt-4o"
    assert tiers["mid"].models == ("gpt-4.1-mini", "gpt-4o-mini")
    assert tiers[1] is tiers["mid"]
    assert tiers.index("frontier") == 2
    assert tiers.tier_of_model("gpt-4o-mini") == 0  # the first tier that lists it
    assert tiers.tier_of_model("claude-x") is None
    assert [t.name for t in tiers] == ["cheap", "mid", "frontier"]


def test_from_mapping_keeps_order_and_accepts_a_bare_model() -> None:
    tiers = Tiers.from_mapping({"local": "llama", "frontier": ["gpt-4o", "gpt-4.1"]})
    assert tiers.names == ("local", "frontier")
    assert tiers["local"].models == ("llama",)
    assert Tier("x", "gpt-4o").models == ("gpt-4o",)  # type: ignore[arg-type]


def test_any_number_of_tiers() -> None:
    tiers = Tiers([Tier(f"t{i}", (f"m{i}",)) for i in range(6)])
    assert len(tiers) == 6 and tiers.frontier.name == "t5"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Tiers([Tier("only", ("gpt-4o",))]), "at least two tiers"),
        (lambda: Tiers([]), "at least two tiers"),
        (lambda: Tiers([Tier("a", ("x",)), Tier("a", ("y",))]), "repeated: ['a']"),
        (lambda: Tier("empty", ()), "at least one model"),
        (lambda: Tier("", ("x",)), "non-empty name"),
        (lambda: Tier("blank", ("",)), "non-empty strings"),
        (lambda: Tier("twice", ("x", "x")), "lists a model twice"),
        (lambda: Tier("neg", ("x",), usd_per_mtok=Decimal(-1)), "finite number >= 0"),
        (lambda: Tiers([Tier("a", ("x",)), "b"]), "expected Tier objects"),  # type: ignore[list-item]
    ],
)
def test_validation_errors_say_what_is_wrong(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value)


def test_unknown_tier_name_lists_the_tiers() -> None:
    with pytest.raises(
        ConfigurationError, match=r"no tier named 'big'.*'cheap', 'mid', 'frontier'"
    ):
        three()["big"]


def test_expected_costs_from_the_catalog() -> None:
    tiers = three()
    cheap, mid, frontier = tiers.expected_costs(CATALOG, input_tokens=1000, output_tokens=200)
    # gpt-4o: 1000 x $2.50/M + 200 x $10/M = $0.0045; gpt-4o-mini: $0.15 / $0.60 -> $0.00027
    assert frontier == Decimal("0.0045")
    assert cheap == Decimal("0.00027")
    assert mid is not None and cheap < mid < frontier
    rel = tiers.relative_costs(CATALOG, input_tokens=1000, output_tokens=200)
    assert rel[-1] == 1.0 and rel[0] == pytest.approx(0.27 / 4.5)
    assert tiers.is_cost_ordered(CATALOG)


def test_flat_price_override_and_unknown_prices() -> None:
    tiers = Tiers(
        [Tier("local", ("my-local-model",), usd_per_mtok=Decimal("0.05")), Tier("f", ("gpt-4o",))]
    )
    local = tiers.expected_costs(CATALOG, input_tokens=1000, output_tokens=1000)[0]
    assert local == Decimal("0.0001")  # 2000 tokens x $0.05/M
    unknown = Tiers([Tier("x", ("no-such-model",)), Tier("f", ("gpt-4o",))])
    assert unknown.expected_costs(CATALOG)[0] is None
    with pytest.raises(ConfigurationError, match=r"no price for tier\(s\) \['x'\]"):
        unknown.relative_costs(CATALOG)
    backwards = Tiers([Tier("a", ("gpt-4o",)), Tier("b", ("gpt-4o-mini",))])
    assert not backwards.is_cost_ordered(CATALOG)


def test_value_semantics() -> None:
    assert three() == three() and hash(three()) == hash(three())
    assert "cheap=['gpt-4o-mini']" in repr(three())


def test_tier_members_takes_one_model_or_a_list_and_names_the_owner_in_errors() -> None:
    from costopt_core.routing.tiers import tier_members

    members, tiers = tier_members({"small": "a", "frontier": ["b", "c"]}, str.upper, owner="X")
    assert members == [["a"], ["b", "c"]]
    assert tiers.names == ("small", "frontier") and tiers.frontier.models == ("B", "C")
    with pytest.raises(ConfigurationError, match=r"X needs at least two tiers, got \['small'\]"):
        tier_members({"small": "a"}, str.upper, owner="X")
    with pytest.raises(ConfigurationError, match="X's tier 'small' has no models"):
        tier_members({"small": [], "frontier": "b"}, str.upper, owner="X")
