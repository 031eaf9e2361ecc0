"""Change capture from MySQL's row-based binary log (issues 17 and 25). Plain Python, no Dagster.

Tables whose plan entry says `capture: binlog` are kept current from the binary log instead
of the tiers' reloads of recent days, by a long-lived worker per source:

- `reader`: reads the log from a stored position (mysql-replication), once or following it on
  an open connection (`BinaryLog`), collecting the primary keys each transaction changed, up
  to a commit boundary; a DDL statement on a captured table, a purged position or a missing
  privilege raises `CaptureError` (or stops the table) with what to do.
- `apply`: `Capture` steps: first copies, then for one batch, re-reads the changed keys'
  current rows from MySQL with the table's normal select (`extract.sql.partition_query`: same
  type map, same `_etl_partition_date` rule as polling) inside one consistent snapshot; keys
  no longer there are deletes. The rows, the deletes and the position the batch ends at are
  committed in one warehouse transaction (`ChangeWarehouse.stage_changes`/`commit_changes`).
  The re-read also makes replay idempotent: applying a batch twice, or an older batch after a
  newer one, leaves the table as MySQL has it at the later snapshot. The first copy of a table
  (and a resync) streams the whole table out of one `START TRANSACTION WITH CONSISTENT
  SNAPSHOT` whose binary-log position, taken the way the server's flavour allows, becomes the
  table's start position: no gap.
- `worker`: the process `plex-etl capture --source NAME` runs: the source's capture lock,
  steps back to back, reports per table (to Dagster, through plex_etl/defs/cdc.py), failures
  retried, a clean stop on SIGTERM.
"""
