-- Sales by branch, product and day.
-- BigQuery SQL; {dataset} is the warehouse dataset. Translated for the local warehouse.
SELECT
  c.Emision AS dia,
  c.Sucursal,
  l.IDProducto,
  ANY_VALUE(m.Producto) AS producto,
  COUNT(DISTINCT c.IDComprobante) AS comprobantes,
  SUM(l.Cantidad) AS unidades,
  SUM(l.Total) AS total
FROM {dataset}.plex_factcabecera AS c
JOIN {dataset}.plex_factlineas AS l ON l.IDComprobante = c.IDComprobante
LEFT JOIN {dataset}.plex_medicamentos_latest AS m ON m.CodPlex = l.IDProducto
GROUP BY dia, c.Sucursal, l.IDProducto
