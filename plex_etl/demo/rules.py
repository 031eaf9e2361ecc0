"""Per-table knowledge the schema files do not carry.

- references the production database does not declare but its data follows (an invoice
  line's product exists in medicamentos, a cost row belongs to an invoice line): used to
  pick values, never declared as foreign keys;
- row rules for columns that must agree with each other (line totals);
- statements run after loading (invoice totals = sum of their lines).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from plex_etl.demo import values as v
from plex_etl.demo.schema import ForeignKey


def _ref(table: str, columns: str, referenced: str, referenced_columns: str) -> ForeignKey:
    return ForeignKey(
        name=f"soft_{table}_{columns.replace(',', '_')}", table=table,
        columns=tuple(columns.split(",")), referenced_table=referenced,
        referenced_columns=tuple(referenced_columns.split(",")),
    )


_LINE = "IDComprobante,Orden"
SOFT_REFERENCES: dict[str, tuple[ForeignKey, ...]] = {
    "plex": (
        _ref("factlineascostos", _LINE, "factlineas", _LINE),
        _ref("factlineasbonificaciones", _LINE, "factlineas", _LINE),
        _ref("factreglasaplicadas", "IDComprobante,Linea", "factlineas", _LINE),
        _ref("comprasdetalle", "IDComprobante", "comprascabecera", "IDComprobante"),
        _ref("stock", "Sucursal", "sucursales", "Sucursal"),
        _ref("factlineasptesentrega", _LINE, "factlineas", _LINE),
        _ref("factlineasptesentrega", "SucOrigen", "sucursales", "Sucursal"),
        _ref("factlineas", "IDProducto", "medicamentos", "CodPlex"),
        _ref("factlineas", "IDRubro", "rubros", "CodRubro"),
        _ref("reclineas", "IDProducto", "medicamentos", "CodPlex"),
        _ref("stocklotes", "IDProducto", "medicamentos", "CodPlex"),
        _ref("factreglasaplicadas", "IDProducto", "medicamentos", "CodPlex"),
        _ref("factcoberturas", "IDObSoc,IDPlan", "planes", "CodObSoc,CodPlan"),
        _ref("factcabecera", "Sucursal", "sucursales", "Sucursal"),
        _ref("reccabecera", "Sucursal", "sucursales", "Sucursal"),
        _ref("asientos", "IDSucursal", "sucursales", "Sucursal"),
        _ref("asientos", "Empresa", "empresas", "Empresa"),
        _ref("sucursales", "Empresa", "empresas", "Empresa"),
        _ref("pedidos", "Sucursal", "sucursales", "Sucursal"),
        _ref("apppedidos", "IdSucursal", "sucursales", "Sucursal"),
        _ref("clasificadores", "IDSubRubro", "subrubros", "IDSubRubro"),
    ),
    "quantio": (),
}

# Columns whose name alone says too little (a `Nombre` of a category is not a person's).
COLUMN_KINDS: dict[tuple[str, str], str] = {
    ("categorias", "Nombre"): "category",
    ("categories", "Category"): "category",
    ("clasificadores", "Nombre"): "category",
    ("subrubros", "Nombre"): "category",
    ("rubros", "Rubro"): "category",
    ("cuentascontables", "Descripcion"): "account",
    ("asientos_detalle", "Descripcion"): "account",
    ("gastos", "Detalle"): "account",
    ("apppedidosorigenes", "Nombre"): "branch",
    ("plex_proveedores", "Razon"): "supplier",
}

RowRule = Callable[[np.random.Generator, int], dict[str, pa.Array]]


def _invoice_lines(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """Quantity x unit price, less discount, VAT included: Total is what the header sums."""
    quantity = rng.choice(np.array([1, 1, 1, 1, 2, 2, 3, 6]), n)
    unit = v.money(rng, n, 400.0, 45000.0)
    percent = np.array([0.0, 0.0, 0.0, 10.0, 20.0, 40.0])[rng.integers(0, 6, n)]
    vat = np.array([21.0, 21.0, 0.0])[rng.integers(0, 3, n)]
    subtotal = np.round(quantity * unit, 2)
    discount = np.round(subtotal * percent / 100, 2)
    total = np.round(subtotal - discount, 2)
    vat_amount = np.round(total * vat / (100 + vat), 2)
    return {
        "Cantidad": pa.array(quantity), "PrecioUnitario": pa.array(unit),
        "PrecioReal": pa.array(unit), "IVA": pa.array(vat), "DesPorcentaje": pa.array(percent),
        "DesImporte": pa.array(discount), "Subtotal": pa.array(subtotal),
        "ImporteIva": pa.array(vat_amount), "PrecioNeto": pa.array(np.round(total - vat_amount, 2)),
        "Total": pa.array(total), "CantDecimal": pa.array(quantity.astype(np.float64)),
        "Detalle": v.pick(rng, v.vocab.PRODUCTS, n), "TipoCantidad": v.pick(rng, ("U",), n),
    }


def _products(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    price = v.money(rng, n, 500.0, 80000.0)
    cost = np.round(price * rng.uniform(0.55, 0.8, n), 2)
    return {
        "Producto": v.pick(rng, v.vocab.PRODUCTS, n),
        "Presentaci": v.pick(rng, [f"{size} comp." for size in v.vocab.PACK_SIZES], n),
        "Precio": pa.array(price), "Precio2": pa.array(np.round(price * 0.95, 2)),
        "Costo": pa.array(cost), "UltimoCosto": pa.array(cost), "costoPPP": pa.array(cost),
        "Margen": pa.array(np.round((price / cost - 1) * 100, 2)),
        "Iva": pa.array(np.array([0.0, 21.0])[rng.integers(0, 2, n)]),
    }


def _journal_lines(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    amount = v.money(rng, n, 100.0, 900000.0)
    debit = rng.random(n) < 0.5
    return {"Debe": pa.array(np.where(debit, amount, 0.0)),
            "Haber": pa.array(np.where(debit, 0.0, amount))}


ROW_RULES: dict[tuple[str, str], RowRule] = {
    ("plex", "factlineas"): _invoice_lines,
    ("plex", "medicamentos"): _products,
    ("plex", "asientos_detalle"): _journal_lines,
}

AFTER_LOAD: dict[str, tuple[str, ...]] = {
    "plex": (
        # The header total is the sum of its lines (headers without lines keep theirs).
        "UPDATE factcabecera c JOIN (SELECT IDComprobante, ROUND(SUM(Total), 2) AS total "
        "FROM factlineas GROUP BY IDComprobante) l ON l.IDComprobante = c.IDComprobante "
        "SET c.TotalComprobante = l.total",
    ),
    "quantio": (
        "UPDATE plex_pedidos p JOIN (SELECT IdPedido, SUM(Cantidad * PrecioUnitario) AS total "
        "FROM plex_pedidoslineas GROUP BY IdPedido) l ON l.IdPedido = p.IdPedido "
        "SET p.Total = l.total",
    ),
}
