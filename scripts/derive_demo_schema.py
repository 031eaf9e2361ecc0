"""Derive `plex_etl/demo/plex_schema.yaml` from the captured production reference.

Run once when the reference changes (the package never reads the reference at run time):

    .venv/bin/python scripts/derive_demo_schema.py [REFERENCE_DIR]

It keeps what the demo builder needs from `mysql_structure.yaml` (tables, column order,
types, nullability, defaults, auto_increment, primary keys, indexed columns), the 86
foreign keys of `mysql_relationships_discovered.yaml`, production row counts from
`incremental_strategy.yaml`, and adds the 34 lookup tables the foreign keys point to.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO / "plex_etl_tests" / "data" / "plex-reference"  # copy of shared/plex-reference
OUTPUT = REPO / "plex_etl" / "demo" / "plex_schema.yaml"

# The strategy file has no count for this table; a few lines per app order is plausible.
UNKNOWN_ROWS = {"apppedidoslineasfact": 150000}

# Kept utf8mb4 like tables migrated later; none of them shares a string key with a latin1
# table (InnoDB refuses string foreign keys across character sets).
UTF8_TABLES = {"asientos", "asientos_detalle", "factpagos", "operadores", "sucursales"}

# Event dates besides the watermark columns of the strategy file (which wins only where
# the column exists: the old system listed some that do not).
EXTRA_EVENT_DATES = {
    "comprascabecera": ["FechaEmision"],
    "pedidos": ["FechaDesde"],
    "factlineasptesentrega": ["FechaHoraFactura"],
    "stocklotes": ["FechaCompra"],
    "medicamentos": ["FechaModificacion"],
    "apppedidosmovimientos": ["Fecha"],
}

# Descriptions of the lookup rows; tables not listed get generic numbered descriptions.
LOOKUP_VALUES: dict[str, list[str]] = {
    "provincias": [
        "Salta", "Buenos Aires", "Ciudad Autónoma de Buenos Aires", "San Luis", "Entre Ríos",
        "La Rioja", "Santiago del Estero", "Chaco", "San Juan", "Catamarca", "La Pampa",
        "Mendoza", "Misiones", "Formosa", "Neuquén", "Río Negro", "Santa Fe", "Tucumán",
        "Chubut", "Tierra del Fuego", "Corrientes", "Córdoba", "Jujuy", "Santa Cruz",
    ],
    "tarjetas": ["Visa", "Mastercard", "American Express", "Cabal", "Naranja", "Maestro"],
    "mediosdepago": ["Efectivo", "Tarjeta de crédito", "Tarjeta de débito", "Cheque",
                     "Transferencia", "Mercado Pago", "Cuenta corriente"],
    "formas": ["Comprimidos", "Cápsulas", "Jarabe", "Crema", "Gotas", "Inyectable", "Óvulos"],
    "tiposiva": ["Exento", "IVA 10,5%", "IVA 21%", "No gravado"],
    "tiposventa": ["Venta libre", "Bajo receta", "Receta archivada", "Receta duplicado"],
    "psicofarmacos": ["Lista I", "Lista II", "Lista III", "Lista IV"],
    "tamanos": ["Chico", "Mediano", "Grande", "Hospitalario"],
    "grupos": ["Particulares", "Jubilados", "Empleados", "Mayoristas"],
    "pedidosestados": ["Pendiente", "Enviado", "Recibido parcial", "Recibido", "Anulado"],
    "pedidoslineasestados": ["Pendiente", "Confirmada", "Recibida", "Faltante", "Anulada"],
    "apppedidosestados": ["Nuevo", "Confirmado", "En preparación", "Listo", "Entregado",
                          "Cancelado"],
    "asientos_estados": ["Borrador", "Confirmado", "Anulado"],
    "asientos_procesos": ["Ventas", "Compras", "Caja", "Ajuste manual"],
    "cuentascontables_tipos": ["Activo", "Pasivo", "Patrimonio neto", "Resultado positivo",
                               "Resultado negativo"],
    "comportamientos": ["Porcentaje", "Precio fijo", "Tope por receta"],
    "usuariosperfiles": ["Administrador", "Farmacéutico", "Cajero", "Repositor"],
    "afip_actividadesventa": ["Venta al por menor de productos farmacéuticos",
                              "Venta al por menor de perfumería", "Servicios de óptica"],
    "categorytypes": ["Terapéutica", "Marca", "Góndola"],
    "presentacionesrecetas": ["Quincena 1", "Quincena 2", "Mensual"],
    "tiposunidades": ["mg", "ml", "g", "UI", "mcg"],
    "tiposconcentracion": ["Simple", "Compuesta", "Porcentual"],
}


def _column(raw: dict[str, Any]) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": raw["name"], "type": raw["mysql_column_type"], "nullable": bool(raw["is_nullable"]),
    }
    if raw.get("column_default") is not None:
        column["default"] = str(raw["column_default"])
    if raw.get("extra"):
        column["extra"] = raw["extra"]
    return column


def _foreign_keys(relationships: dict[str, Any]) -> list[dict[str, Any]]:
    keys = []
    for name, fk in sorted(relationships["foreign_keys"].items()):
        single = fk["type"] != "composite"
        keys.append({
            "name": name,
            "table": fk["table"],
            "columns": [fk["column"]] if single else list(fk["columns"]),
            "referenced_table": fk["referenced_table"],
            "referenced_columns": (
                [fk["referenced_column"]] if single else list(fk["referenced_columns"])
            ),
        })
    return keys


def _production_rows(strategy: dict[str, Any]) -> dict[str, int]:
    rows = dict(UNKNOWN_ROWS)
    for table, entry in strategy["databases"]["plex"]["priority_tables"].items():
        if entry.get("estimated_rows") is not None:
            rows[table] = int(entry["estimated_rows"])
    return rows


def _event_dates(strategy: dict[str, Any], table: str, names: list[str]) -> list[str]:
    entry = strategy["databases"]["plex"]["priority_tables"].get(table) or {}
    wanted = list(entry.get("watermark_column") or []) + EXTRA_EVENT_DATES.get(table, [])
    return [name for name in dict.fromkeys(wanted) if name in names]


def derive(reference: Path) -> dict[str, Any]:
    structure = yaml.safe_load((reference / "mysql_structure.yaml").read_text())["tables"]
    relationships = yaml.safe_load((reference / "mysql_relationships_discovered.yaml").read_text())
    strategy = yaml.safe_load((reference / "incremental_strategy.yaml").read_text())
    rows = _production_rows(strategy)
    foreign_keys = _foreign_keys(relationships)

    tables: dict[str, Any] = {}
    for name, raw in structure.items():
        columns = [_column(c) for c in sorted(raw["columns"], key=lambda c: c["ordinal_position"])]
        names = [c["name"] for c in columns]
        fk_columns = {fk["columns"][0] for fk in foreign_keys if fk["table"] == name}
        tables[name] = {
            "rows": rows[name],
            "charset": "utf8mb4" if name in UTF8_TABLES else "latin1",
            "primary_key": [c["name"] for c in raw["columns"] if c.get("column_key") == "PRI"],
            # Indexed in production but not by a foreign key: indexed here too.
            "indexes": [[c["name"]] for c in raw["columns"]
                        if c.get("column_key") == "MUL" and c["name"] not in fk_columns],
            "event_dates": _event_dates(strategy, name, names),
            "columns": columns,
        }

    # Lookup tables: the referenced column(s) typed like the referencing column, plus a
    # description, so every declared foreign key is valid.
    for fk in foreign_keys:
        ref = fk["referenced_table"]
        if ref in structure:
            continue
        child = {c["name"]: c for c in tables[fk["table"]]["columns"]}
        key_columns = [
            {"name": r, "type": child[c]["type"], "nullable": False}
            for c, r in zip(fk["columns"], fk["referenced_columns"], strict=True)
        ]
        if ref in tables:
            known = {c["name"]: c["type"] for c in tables[ref]["columns"]}
            for column in key_columns:
                if known.get(column["name"], column["type"]) != column["type"]:
                    raise SystemExit(f"{ref}.{column['name']}: referenced with two types")
            continue
        values = LOOKUP_VALUES.get(ref) or [f"{ref.replace('_', ' ').capitalize()} {i}"
                                            for i in range(1, 7)]
        tables[ref] = {
            "rows": len(values),
            "charset": "latin1",
            "lookup": True,
            "values": values,
            "primary_key": [c["name"] for c in key_columns],
            "indexes": [],
            "event_dates": [],
            "columns": [*key_columns,
                        {"name": "Descripcion", "type": "varchar(100)", "nullable": True}],
        }

    # InnoDB needs the referenced columns to be the leftmost columns of an index.
    for fk in foreign_keys:
        parent = tables[fk["referenced_table"]]
        refs = fk["referenced_columns"]
        leading = [parent["primary_key"], *parent["indexes"]]
        if not any(index[: len(refs)] == refs for index in leading):
            parent["indexes"].append(list(refs))

    return {
        "schema": "plex",
        "description": "Derived from plex-reference by scripts/derive_demo_schema.py; do not edit.",
        "tables": tables,
        "foreign_keys": foreign_keys,
    }


class _CompactDumper(yaml.SafeDumper):
    """Block style for tables, flow style for columns, keys and index lists: one line each."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, dict) for item in data) and len(data) < 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = "type" in data or "referenced_table" in data
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_CompactDumper.add_representer(list, _represent_list)
_CompactDumper.add_representer(dict, _represent_dict)


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else DEFAULT_REFERENCE
    schema = derive(reference)
    OUTPUT.write_text(yaml.dump(
        schema, Dumper=_CompactDumper, sort_keys=False, allow_unicode=True, width=200
    ))
    lookups = sum(1 for t in schema["tables"].values() if t.get("lookup"))
    print(f"wrote {OUTPUT}: {len(schema['tables']) - lookups} tables, {lookups} lookup tables, "
          f"{len(schema['foreign_keys'])} foreign keys")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
