"""A VM name in a request (DeleteVms, Ping, ports) is checked by the name's rule alone, with the error
naming the request's field; a VM's other fields are not asked for."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from services.agent import convert


@pytest.mark.parametrize("name", ["v0-0-7", "a", "x" * 32, "vpc", "vpc1x"])
def test_names_a_vm_can_have(name: str) -> None:
    convert.vm_name("names[0]", name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "vm name"),
        ("Bad_Name", "vm name"),
        ("x" * 33, "vm name"),
        ("a b", "vm name"),
        ("../etc", "vm name"),
        ("vpc7", "reserved for VPC namespaces"),
    ],
)
def test_a_bad_name_names_the_field(name: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        convert.vm_name("names[3]", name)
    assert raised.value.field == "names[3]"
    assert problem in raised.value.problem
