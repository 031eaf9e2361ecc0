-- Prescriptions with their lines and the coverage billed on their invoice.
-- BigQuery SQL; {dataset} is the warehouse dataset. Translated for the local warehouse.
WITH renglones AS (
  SELECT IDReceta, COUNT(*) AS renglones, SUM(Cantidad) AS unidades, SUM(CobImporte) AS cobertura
  FROM {dataset}.plex_reclineas
  GROUP BY IDReceta
),
coberturas AS (
  SELECT IDComprobante, SUM(TotACOS) AS total_acos
  FROM {dataset}.plex_factcoberturas
  GROUP BY IDComprobante
)
SELECT
  r.IDReceta,
  r.IDComprobante,
  r.IDObSoc,
  r.IDPlan,
  COALESCE(r.FechaEmision, r.FechaPrescripcion, r.FechaDispensacion, r.FechaAutorizacion) AS fecha,
  r.FechaVencimiento,
  r.estado,
  r.TotReceta,
  COALESCE(g.renglones, 0) AS renglones,
  COALESCE(g.unidades, 0) AS unidades,
  COALESCE(g.cobertura, 0) AS cobertura_lineas,
  cb.total_acos AS cobertura_facturada,
  r._etl_partition_date
FROM {dataset}.plex_reccabecera AS r
LEFT JOIN renglones AS g ON g.IDReceta = r.IDReceta
LEFT JOIN coberturas AS cb ON cb.IDComprobante = r.IDComprobante
