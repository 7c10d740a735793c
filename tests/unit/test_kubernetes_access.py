"""A permission as an operator reads it, and the RBAC rule that grants it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from infra_observer.kubernetes_api.access import Permission


@dataclass(frozen=True)
class Case:
    permission: Permission
    name: str
    rule: str


CASES = [
    Case(
        permission=Permission(group="batch", resource="jobs", verbs=("get", "list", "watch")),
        name="jobs (batch)",
        rule='{apiGroups: ["batch"], resources: ["jobs"], verbs: ["get", "list", "watch"]}',
    ),
    Case(
        permission=Permission(group="", resource="pods", subresource="log", verbs=("get",)),
        name="pods/log",
        rule='{apiGroups: [""], resources: ["pods/log"], verbs: ["get"]}',
    ),
    Case(
        permission=Permission(group="coordination.k8s.io", resource="leases", verbs=("update",)),
        name="leases (coordination.k8s.io)",
        rule='{apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["update"]}',
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_permission_names_itself_and_its_rule(case: Case) -> None:
    assert case.permission.name == case.name
    assert case.permission.rule == case.rule
