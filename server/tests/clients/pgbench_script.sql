-- pgbench custom script for server/tests/pg_clients.rs: a point query on the music table by a
-- random row number, run as `pgbench -n -c 4 -j 2 -t 20 -f pgbench_script.sql -M simple|extended|prepared`.
\set id random(1, 5)
SELECT file_name, sample_rate FROM (SELECT file_name, sample_rate, row_number() OVER (ORDER BY file_name) AS id FROM music) t WHERE id = :id;
