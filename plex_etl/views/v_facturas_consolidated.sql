-- Invoices with their lines and payments: one row per invoice.
-- BigQuery SQL; {dataset} is the warehouse dataset. Translated for the local warehouse.
WITH lineas AS (
  SELECT IDComprobante, COUNT(*) AS lineas, SUM(Cantidad) AS unidades, SUM(Total) AS total_lineas
  FROM {dataset}.plex_factlineas
  GROUP BY IDComprobante
),
pagos AS (
  SELECT IDComprobante, COUNT(*) AS pagos, SUM(Importe) AS total_pagos
  FROM {dataset}.plex_factpagos
  GROUP BY IDComprobante
)
SELECT
  c.IDComprobante,
  c.Emision,
  c.Sucursal,
  c.Tipo,
  c.Letra,
  c.PuntoVta,
  c.Numero,
  c.IDCliente,
  c.CliApeNom,
  c.TotalComprobante,
  c.TotalCobertura,
  COALESCE(l.lineas, 0) AS lineas,
  COALESCE(l.unidades, 0) AS unidades,
  COALESCE(l.total_lineas, 0) AS total_lineas,
  COALESCE(p.pagos, 0) AS pagos,
  COALESCE(p.total_pagos, 0) AS total_pagos,
  c._etl_partition_date
FROM {dataset}.plex_factcabecera AS c
LEFT JOIN lineas AS l ON l.IDComprobante = c.IDComprobante
LEFT JOIN pagos AS p ON p.IDComprobante = c.IDComprobante
