-- Stock per branch and product today, with its lots and the product's data.
-- BigQuery SQL; {dataset} is the warehouse dataset. Translated for the local warehouse.
WITH lotes AS (
  SELECT Sucursal, IDProducto, COUNT(*) AS lotes, SUM(CantidadStock) AS unidades_en_lotes,
         MIN(FechaVencimiento) AS proximo_vencimiento
  FROM {dataset}.plex_stocklotes_latest
  GROUP BY Sucursal, IDProducto
)
SELECT
  s.Sucursal,
  s.IDProducto,
  m.Producto,
  m.Presentaci AS presentacion,
  m.CodLab,
  s.Cantidad,
  s.Unidades,
  s.Minimo,
  s.Cantidad < COALESCE(s.Minimo, 0) AS bajo_minimo,
  COALESCE(lt.lotes, 0) AS lotes,
  COALESCE(lt.unidades_en_lotes, 0) AS unidades_en_lotes,
  lt.proximo_vencimiento,
  s._etl_partition_date AS dia
FROM {dataset}.plex_stock_latest AS s
LEFT JOIN {dataset}.plex_medicamentos_latest AS m ON m.CodPlex = s.IDProducto
LEFT JOIN lotes AS lt ON lt.Sucursal = s.Sucursal AND lt.IDProducto = s.IDProducto
