"""The table graph of a source: which replicated tables depend on which, and their clusters."""

from __future__ import annotations

from dataclasses import dataclass

from plex_etl.catalog.model import Catalog
from plex_etl.catalog.plan import SourcePlan


@dataclass(frozen=True)
class TableGraph:
    parents: dict[str, tuple[str, ...]]  # table -> replicated tables it depends on (acyclic)
    broken: tuple[tuple[str, str, str], ...]  # (table, parent, why) edges left out
    clusters: dict[str, str]  # table -> cluster (the table its partition dates come from)


def _reaches(parents: dict[str, set[str]], start: str, goal: str) -> bool:
    stack, seen = [start], set()
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(parents.get(node, ()))
    return False


def table_graph(catalog: Catalog, plan: SourcePlan) -> TableGraph:
    """Dependencies from the relationships between replicated tables.

    Self-references and edges that would close a cycle are left out, in a fixed order
    (child table, then relationship name), so the same catalog always yields the same graph.
    """
    replicated = {p.table for p in plan.included if p.table in catalog.tables}
    parents: dict[str, set[str]] = {t: set() for t in replicated}
    broken: list[tuple[str, str, str]] = []
    for rel in sorted(catalog.relationships, key=lambda r: (r.table, r.inferred, r.name)):
        child, parent = rel.table, rel.referenced_table
        if child not in replicated or parent not in replicated or parent in parents[child]:
            continue
        if child == parent:
            broken.append((child, parent, f"{rel.name} references its own table"))
        elif _reaches(parents, parent, child):
            broken.append((child, parent, f"{rel.name} would close a cycle"))
        else:
            parents[child].add(parent)
    clusters = {}
    for table in replicated:
        current = plan.tables[table]
        while current.strategy == "child" and current.parent:
            current = plan.tables[catalog.relationship(current.parent).referenced_table]
        dated = current.table != table or any(
            p.strategy == "child" and p.parent and catalog.relationship(p.parent).referenced_table == table
            for p in plan.included
        )
        clusters[table] = current.table if dated else ("master" if current.strategy == "snapshot" else table)
    return TableGraph(
        parents={t: tuple(sorted(p)) for t, p in parents.items()},
        broken=tuple(broken),
        clusters=clusters,
    )
