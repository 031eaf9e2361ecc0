"""Column values: one generic generator per MySQL type, refined by the column's name.

Generators return pyarrow arrays (numbers, dates or strings) for `n` rows; `rules.py`
overrides whole tables where columns must agree with each other (invoice lines).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from plex_etl.demo import vocabulary as vocab
from plex_etl.demo.schema import Column

MAX_SIGNED = {"tinyint": 127, "smallint": 32767, "mediumint": 8388607, "int": 2147483647,
              "bigint": 9223372036854775807}
MAX_UNSIGNED_BIGINT = 18446744073709551615
TEXT_TYPES = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set",
              "json")
DATE_TYPES = ("date", "datetime", "timestamp")
EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Period:
    """The days event dates are spread over: `days` days ending at `end` inclusive."""

    end: dt.date
    days: int

    @property
    def first_day(self) -> int:
        return (self.end - EPOCH).days - self.days + 1


def pick(rng: np.random.Generator, options: Sequence[str], n: int) -> pa.Array:
    return pa.array(np.asarray(options, dtype=object)[rng.integers(0, len(options), n)],
                    type=pa.string())


def join(*parts: pa.Array | str, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def digits(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    numbers = pa.array(rng.integers(0, 10**width, n, dtype=np.int64)).cast(pa.string())
    return pc.utf8_lpad(numbers, width=width, padding="0")


def person_names(rng: np.random.Generator, n: int) -> pa.Array:
    return join(pick(rng, vocab.LAST_NAMES, n), pick(rng, vocab.FIRST_NAMES, n), sep=", ")


def day_numbers_to_dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype("datetime64[D]"))


def seconds_to_datetimes(seconds: np.ndarray, unit: str = "s") -> pa.Array:
    if unit == "us":
        return pa.array((seconds * 1_000_000).astype("datetime64[us]"))
    return pa.array(seconds.astype("datetime64[s]"))


def event_dates(rng: np.random.Generator, column: Column, rows: np.ndarray, total: int,
                period: Period) -> pa.Array:
    """Dates rising with the row number over the period, so every day gets rows."""
    day = period.first_day + (rows * period.days) // max(total, 1)
    return _at_day(rng, column, day)


def _at_day(rng: np.random.Generator, column: Column, day: np.ndarray) -> pa.Array:
    if column.base_type == "date":
        return day_numbers_to_dates(day)
    # Opening hours, 08:00 to 22:00.
    seconds = day * 86400 + rng.integers(8 * 3600, 22 * 3600, len(day))
    if "(6)" in column.type:
        return seconds_to_datetimes(seconds + rng.random(len(day)).round(6), "us")
    return seconds_to_datetimes(seconds)


def other_dates(rng: np.random.Generator, column: Column, n: int, period: Period) -> pa.Array:
    """Birth dates, due dates and the like: years around the period, not inside it only."""
    name = column.name.lower()
    today = (period.end - EPOCH).days
    if "nacimiento" in name:
        day = rng.integers((dt.date(1935, 1, 1) - EPOCH).days, today - 18 * 365, n)
    elif "venc" in name or "vto" in name:
        day = today + rng.integers(-30, 1100, n)
    else:
        day = today - rng.integers(0, 6 * 365, n)
    return _at_day(rng, column, day)


def times(rng: np.random.Generator, n: int) -> pa.Array:
    seconds = rng.integers(7 * 3600, 23 * 3600, n)
    return format_times(seconds)


def format_times(seconds: np.ndarray) -> pa.Array:
    """MySQL TIME text, which may exceed 24 hours or be negative ('100:30:00', '-01:15:00')."""
    sign = pa.array(np.where(seconds < 0, "-", ""))
    magnitude = np.abs(seconds)

    def two(values: np.ndarray) -> pa.Array:
        return pc.utf8_lpad(pa.array(values).cast(pa.string()), width=2, padding="0")

    return join(sign, two(magnitude // 3600), ":", two(magnitude // 60 % 60), ":",
                two(magnitude % 60))


def enum_options(column: Column) -> list[str]:
    return re.findall(r"'((?:[^']|'')*)'", column.type)


def binary_hex(rng: np.random.Generator, n: int, length: int) -> pa.Array:
    """Random bytes as hex text (the loader UNHEXes them): includes 00, 09, 0A and 5C bytes."""
    table = np.array([f"{i:02X}" for i in range(256)], dtype=object)
    raw = rng.integers(0, 256, (n, length))
    return join(*(pa.array(table[raw[:, i]], type=pa.string()) for i in range(length)))


def money(rng: np.random.Generator, n: int, low: float = 300.0, high: float = 60000.0) -> np.ndarray:
    """Prices in pesos: log-uniform between `low` and `high`, to the cent."""
    return np.round(np.exp(rng.uniform(np.log(low), np.log(high), n)), 2)


_STRING_RULES: tuple[tuple[str, str], ...] = (
    (r"mail", "email"),
    (r"^nombrefantasia$", "branch"),
    (r"razonsocial", "company"),
    (r"^(nombre|cli_nombre|cliapenom|nombrecompleto|afilnombre|mednombre|encargado"
     r"|farmaceutico|nombre_afiliado)$", "person"),
    (r"domicilio|direccion", "address"),
    (r"localidad", "city"),
    (r"^(provincia|cli_provincia|medprovincia|idprovincia)$", "province"),
    (r"telefono|fax|teleonline", "phone"),
    (r"cuit", "cuit"),
    (r"documento|nrodoc|cli_doc|^dni", "document"),
    (r"codpostal|cli_codpostal", "postcode"),
    (r"paginaweb", "web"),
    (r"^(producto|descripcion|presentaci|medicamento)$", "product"),
    (r"laborato", "lab"),
    (r"^razon$", "supplier"),
    (r"descripcio$", "insurer"),
    (r"^(concepto|detalle|leyenda|diagnostico|motivodto|bonificaciones|promo)$", "phrase"),
    (r"observ|derechos|motivos|datosextra|guia|detalle", "note"),
    (r"^(activo|bloqueado|mayorista|ventalibre|importado|pedidos|debitoautomatico|cuotamensual"
     r"|ecommerce|refrigeracion|tratprolongado|generico|presentada|pendiente|recupero"
     r"|altocosto|combinacion|padron)$", "yes_no"),
    (r"^(letra)$", "letter"),
    (r"^tipo$", "voucher"),
    (r"tipoiva", "iva"),
    (r"^sexo$", "sex"),
)
_NUMBER_RULES: tuple[tuple[str, str], ...] = (
    (r"latitud", "latitude"),
    (r"longitud", "longitude"),
    (r"alicuota|^iva$", "vat"),
    (r"porc|margen|descuento|bonificacion(interna|diferencial)$|coseguro", "percent"),
    (r"precio|costo|importe|total|monto|debe|haber|neto|limite|tot|adeud|ventas|base|envio",
     "money"),
    (r"cantidad|unidades|stock|minimo|maximo|seguridad", "quantity"),
    (r"puntovta|sucursal|^suc|empresa|level|nivel|tipo|estado", "small"),
    (r"edad", "age"),
    (r"plazo|dias", "days"),
)


def _rule(rules: tuple[tuple[str, str], ...], name: str) -> str | None:
    lowered = name.lower()
    for pattern, kind in rules:
        if re.search(pattern, lowered):
            return kind
    return None


def strings(rng: np.random.Generator, column: Column, n: int, kind: str | None = None) -> pa.Array:
    kind = kind or _rule(_STRING_RULES, column.name)
    length = column.length or 255
    if column.default is not None and column.base_type == "char":
        kind = kind or "default"
    values = _string_kind(rng, kind, column, n)
    if column.base_type in ("char", "varchar"):
        values = pc.utf8_slice_codeunits(values, 0, length)
    return values


# Text kinds that are a weighted pick from a fixed list (repeats weigh the choice).
_CHOICES: dict[str, Sequence[str]] = {
    "product": vocab.PRODUCTS,
    "lab": vocab.LABS,
    "supplier": vocab.SUPPLIERS,
    "insurer": vocab.HEALTH_INSURERS,
    "category": vocab.CATEGORIES,
    "account": vocab.ACCOUNTS,
    "phrase": vocab.PHRASES,
    "note": vocab.PHRASES + vocab.NOTES,
    "yes_no": ("S", "S", "S", "N"),
    "letter": ("A", "B", "B", "C"),
    "voucher": ("FAC", "FAC", "FAC", "NCR", "NDB", "TKT"),
    "iva": ("CF", "CF", "RI", "MT", "EX"),
    "sex": ("F", "M", "F", "M", "X"),
    "city": [c[0] for c in vocab.CITIES],
    "postcode": [c[2] for c in vocab.CITIES],
}


def _string_kind(rng: np.random.Generator, kind: str | None, column: Column, n: int) -> pa.Array:
    length = column.length or 255
    if kind in _CHOICES:
        return pick(rng, _CHOICES[kind], n)
    if kind == "email":
        return join(pick(rng, vocab.USER_NAMES, n), ".", digits(rng, n, 3), "@",
                    pick(rng, vocab.MAIL_DOMAINS, n))
    if kind == "branch":
        return join("Farmacia Onze ", pick(rng, vocab.BRANCHES, n))
    if kind == "company":
        return pick(rng, ("Onze Center S.A.", "Farmacias Onze S.R.L.", "Peña y Núñez S.A.",
                          "Droguería Onze del Norte S.A.", "Onze Córdoba S.A."), n)
    if kind == "person":
        return person_names(rng, n)
    if kind == "address":
        number = pa.array(rng.integers(1, 5000, n)).cast(pa.string())
        return join(pick(rng, vocab.STREETS, n), number, sep=" ")
    if kind == "province":
        if length == 1:
            return pick(rng, [c[1] for c in vocab.CITIES], n)
        return pick(rng, vocab.PROVINCES, n)
    if kind == "phone":
        return join(pick(rng, [c[3] for c in vocab.CITIES], n), digits(rng, n, 7), sep=" ")
    if kind == "cuit":
        return join(pick(rng, ("20", "23", "27", "30", "33"), n), digits(rng, n, 8),
                    digits(rng, n, 1), sep="-")
    if kind == "document":
        return pa.array(rng.integers(5_000_000, 46_000_000, n)).cast(pa.string())
    if kind == "web":
        return join("www.", pick(rng, vocab.USER_NAMES, n), "farma.com.ar")
    if kind == "default":
        return pa.array([column.default] * n, type=pa.string())
    if column.base_type in ("text", "mediumtext", "longtext", "tinytext"):
        return pick(rng, vocab.PHRASES + vocab.NOTES, n)
    if length <= 3:
        letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
        return join(*(pick(rng, letters, n) for _ in range(length)))
    # Codes such as authorisation numbers or lot numbers: letters and digits.
    return join(pick(rng, ("A", "B", "L", "R", "X", "Z"), n), digits(rng, n, min(length - 1, 9)))


def numbers(rng: np.random.Generator, column: Column, n: int) -> pa.Array:
    base = column.base_type
    kind = _rule(_NUMBER_RULES, column.name)
    if base in ("double", "float", "decimal"):
        if kind == "latitude":
            values = rng.uniform(-55.0, -22.0, n).round(6)
        elif kind == "longitude":
            values = rng.uniform(-73.0, -53.0, n).round(6)
        elif kind == "vat":
            values = np.array([0.0, 10.5, 21.0, 21.0])[rng.integers(0, 4, n)]
        elif kind == "percent":
            values = np.array([0.0, 0.0, 5.0, 10.0, 15.0, 40.0, 50.0])[rng.integers(0, 7, n)]
        elif kind == "quantity":
            values = rng.integers(0, 50, n).astype(np.float64)
        else:
            values = money(rng, n)
        scale = re.search(r",\s*(\d+)\)", column.type)
        if scale:
            values = values.round(int(scale.group(1)))
        return pa.array(values)
    if column.type.lower() == "tinyint(1)":
        return pa.array(rng.integers(0, 2, n))
    if base in ("tinyint", "smallint"):
        return pa.array(rng.choice(np.array([0, 0, 0, 1, 1, 2]), n))
    if kind == "quantity":
        return pa.array(rng.integers(0, 60, n))
    if kind == "small" or (kind is None and column.default is not None):
        return pa.array(rng.integers(1, 13, n))
    if kind == "age":
        return pa.array(rng.integers(1, 96, n))
    if kind == "days":
        return pa.array(rng.choice(np.array([0, 15, 30, 60, 90]), n))
    if base == "bigint":
        return pa.array(rng.integers(1, 9_999_999_999, n))
    return pa.array(rng.integers(1, 100_000, n))
