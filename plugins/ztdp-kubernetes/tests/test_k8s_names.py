"""Object names: distinct (application, service) pairs get distinct, valid Kubernetes names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ztdp_kubernetes import object_name

# What ZTDP accepts as application and service names (DNS-1123 labels, ztdp.contracts).
LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
# What a Kubernetes Service's name must be: a DNS-1035 label (starting with a letter).
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

LONG = "a" * 63
TRICKY = [
    ("a-b", "c"),
    ("a", "b-c"),  # the same `a-b-c` when joined
    ("checkout", "checkout-api"),
    ("checkout-checkout", "api"),
    (LONG, "x"),
    (LONG, "y"),  # differ only past the cut
    (LONG, LONG),
    (LONG[:-1] + "b", LONG),
    ("1shop", "api"),  # starts with a digit
    ("z1shop", "api"),  # the same once a letter is put in front
    ("9", "9"),
    ("a", "b"),
]


def test_tricky_pairs_get_distinct_valid_names() -> None:
    names = [object_name(app, svc) for app, svc in TRICKY]
    assert len(set(names)) == len(TRICKY)
    for name in names:
        assert len(name) <= 63 and DNS_1035.match(name), name


def test_names_are_stable_and_readable() -> None:
    assert object_name("checkout", "checkout-api") == object_name("checkout", "checkout-api")
    assert object_name("checkout", "checkout-api").startswith("checkout-checkout-api-")


@given(application=LABEL, service=LABEL)
def test_every_pair_gets_a_dns_1035_label_of_at_most_63_characters(
    application: str, service: str
) -> None:
    name = object_name(application, service)
    assert len(name) <= 63
    assert DNS_1035.match(name), name


@given(pairs=st.lists(st.tuples(LABEL, LABEL), min_size=2, max_size=20, unique=True))
def test_distinct_pairs_get_distinct_names(pairs: list[tuple[str, str]]) -> None:
    assert len({object_name(app, svc) for app, svc in pairs}) == len(pairs)


@pytest.mark.parametrize(("application", "service"), [(LONG, LONG), ("1" * 63, "2" * 63)])
def test_the_longest_names_fill_but_do_not_exceed_63_characters(
    application: str, service: str
) -> None:
    assert len(object_name(application, service)) == 63
