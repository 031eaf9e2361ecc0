"""Warehouse and asset names: valid, deterministic, collision-free, stable across catalogs."""

from __future__ import annotations

import re

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plex_etl.catalog.naming import (
    BIGQUERY_RESERVED_PREFIXES,
    MAX_LENGTH,
    RESERVED_WORDS,
    asset_names,
    step_key,
    warehouse_names,
)
from plex_etl.warehouse.base import LOADED_AT_COLUMN, PARTITION_COLUMN

VALID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def assert_valid(name: str) -> None:
    assert VALID.match(name), name
    assert len(name) <= MAX_LENGTH
    assert not name.upper().startswith(BIGQUERY_RESERVED_PREFIXES), name
    assert name.lower() not in RESERVED_WORDS, name
    assert name.lower() not in (PARTITION_COLUMN, LOADED_AT_COLUMN), name


@pytest.mark.parametrize(
    ("mysql", "expected"),
    [
        ("Fecha Alta", "Fecha_Alta"),
        ("Número", "Numero"),
        ("Ñandú", "Nandu"),
        ("Descripción del artículo", "Descripcion_del_articulo"),
        ("1erTrimestre", "_1erTrimestre"),
        ("42", "_42"),
        ("select", "select_"),
        ("Order", "Order_"),
        ("pivot", "pivot_"),  # DuckDB-only keyword
        ("struct", "struct_"),  # BigQuery keyword
        ("_PARTITIONTIME", "x_PARTITIONTIME"),
        ("_table_suffix", "x_table_suffix"),
        ("__root__", "x__root__"),
        ("_FILE_NAME", "x_FILE_NAME"),
        ("_ROW_TIMESTAMP", "x_ROW_TIMESTAMP"),
        ("_COLIDENTIFIER_1", "x_COLIDENTIFIER_1"),
        ("precio-€", "precio__"),
        ("a.b", "a_b"),
        ("", "_"),
        ("x" * 400, "x" * MAX_LENGTH),
        ("Cod_Art", "Cod_Art"),
    ],
)
def test_single_names(mysql: str, expected: str) -> None:
    assert warehouse_names([mysql]) == {mysql: expected}
    assert_valid(expected)


def test_bookkeeping_columns_are_never_produced() -> None:
    names = warehouse_names([PARTITION_COLUMN, LOADED_AT_COLUMN.upper()])
    assert names == {
        PARTITION_COLUMN: f"{PARTITION_COLUMN}_2",
        LOADED_AT_COLUMN.upper(): f"{LOADED_AT_COLUMN.upper()}_2",
    }


def test_case_insensitive_collisions_resolve_in_input_order() -> None:
    assert warehouse_names(["ID", "id", "Id"]) == {"ID": "ID", "id": "id_2", "Id": "Id_3"}
    # Sanitising can also collide: accents and punctuation.
    assert warehouse_names(["año", "ano", "a o"]) == {"año": "ano", "ano": "ano_2", "a o": "a_o"}
    # A suffixed candidate that is itself taken moves on to the next number.
    assert warehouse_names(["x", "X", "x_2"]) == {"x": "x", "X": "X_2", "x_2": "x_2_2"}


def test_suffix_respects_the_length_limit() -> None:
    long = "y" * 400
    names = warehouse_names([long, long.upper()])
    assert names[long.upper()] == "Y" * (MAX_LENGTH - 2) + "_2"
    assert all(len(n) <= MAX_LENGTH for n in names.values())


def test_deterministic() -> None:
    names = ["b", "A", "a", "ä", "select", "1x"]
    assert warehouse_names(names) == warehouse_names(list(names))


def test_existing_names_are_kept_and_never_collided_with() -> None:
    previous = warehouse_names(["Cliente", "cliente"])
    assert previous == {"Cliente": "Cliente", "cliente": "cliente_2"}
    # Next discovery: the order changed, a column appeared, one was dropped.
    names = warehouse_names(["CLIENTE", "cliente", "Cliente"], existing=previous)
    assert names["cliente"] == "cliente_2"
    assert names["Cliente"] == "Cliente"
    assert names["CLIENTE"] == "CLIENTE_3"
    # A recorded name stays even if the rules would now give something else.
    assert warehouse_names(["weird name"], existing={"weird name": "weird_name_v1"}) == {
        "weird name": "weird_name_v1"
    }
    # Recorded names of dropped columns stay taken.
    assert warehouse_names(["A"], existing={"gone": "a"}) == {"A": "A_2"}


def test_asset_names_keep_dagster_step_names_distinct() -> None:
    names = asset_names(["a-b", "a.b", "a_b"])
    assert names == {"a-b": "a_b", "a.b": "a_b_2", "a_b": "a_b_3"}
    assert len({step_key(n) for n in names.values()}) == 3
    # Recorded names with characters Dagster rewrites still reserve their step name.
    names = asset_names(["a b", "new"], existing={"a-b": "a-b"})
    assert names["a b"] == "a_b_2"


def test_asset_names_do_not_reserve_bookkeeping_names() -> None:
    assert asset_names([PARTITION_COLUMN]) == {PARTITION_COLUMN: PARTITION_COLUMN}


def test_names_work_unquoted_in_duckdb() -> None:
    names = warehouse_names(["select", "Fecha Alta", "1x", "pivot", "Número", "order"])
    con = duckdb.connect()
    columns = ", ".join(f"{n} INTEGER" for n in names.values())
    con.execute(f"CREATE TABLE t ({columns})")
    assert [r[0] for r in con.execute("DESCRIBE t").fetchall()] == list(names.values())


names_strategy = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["select", "ID", "id", "_PARTITIONTIME", "1a", "a-b", "a.b", "a_b",
                         "ñ", "n", PARTITION_COLUMN, "x" * 350]),
    ),
    max_size=30,
    unique=True,
)


@settings(max_examples=200, deadline=None)
@given(names=names_strategy)
def test_property_valid_unique_stable(names: list[str]) -> None:
    result = warehouse_names(names)
    assert list(result) == names
    for name in result.values():
        assert_valid(name)
    assert len({step_key(n) for n in result.values()}) == len(result)
    assert warehouse_names(names) == result
    # Re-running with the result recorded keeps every name, and new names stay distinct.
    extended = [*names, "zz_new", "ZZ_NEW"]
    again = warehouse_names(extended, existing=result)
    assert {n: again[n] for n in names} == result
    assert len({step_key(n) for n in again.values()}) == len(again)


@settings(max_examples=100, deadline=None)
@given(names=names_strategy, split=st.integers(min_value=0, max_value=30))
def test_property_existing_subset_is_preserved(names: list[str], split: int) -> None:
    recorded = warehouse_names(names[:split])
    result = warehouse_names(names, existing=recorded)
    for name, warehouse in recorded.items():
        assert result[name] == warehouse
    assert len({step_key(n) for n in result.values()}) == len(result)


@settings(max_examples=100, deadline=None)
@given(tables=names_strategy)
def test_property_asset_names_are_step_name_unique(tables: list[str]) -> None:
    result = asset_names(tables)
    steps = [re.sub(r"[^A-Za-z0-9_]", "_", n) for n in result.values()]
    assert len(set(steps)) == len(steps)
    assert all(VALID.match(n) for n in result.values())
