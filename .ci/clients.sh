# Installs the real PostgreSQL clients used by server/tests/pg_clients.rs and the server used by
# benches/pg_load.py. Sourced by .ci/run (from the repository root); idempotent and quick when
# everything is already there: each tool or package is checked before anything is installed.

clients_apt=()
command -v psql >/dev/null 2>&1 || clients_apt+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || clients_apt+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || clients_apt+=(postgresql)
[ -f /usr/share/java/postgresql.jar ] || clients_apt+=(libpostgresql-jdbc-java)
command -v javac >/dev/null 2>&1 || clients_apt+=(default-jdk-headless)
command -v openssl >/dev/null 2>&1 || clients_apt+=(openssl)
command -v node >/dev/null 2>&1 || clients_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || clients_apt+=(npm)
if [ "${#clients_apt[@]}" -gt 0 ]; then
  echo "clients.sh: apt-get install ${clients_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${clients_apt[@]}"
fi
unset clients_apt

# Python drivers: psycopg 3, psycopg2, SQLAlchemy 2 and pandas.
if ! python3 - <<'PY' >/dev/null 2>&1
import psycopg, psycopg2, sqlalchemy, pandas
assert int(psycopg.__version__.split(".")[0]) >= 3
assert int(sqlalchemy.__version__.split(".")[0]) >= 2
PY
then
  echo "clients.sh: pip install psycopg psycopg2 sqlalchemy pandas"
  python3 -m pip install --quiet --disable-pip-version-check \
    'psycopg[binary]>=3.1' 'psycopg2-binary>=2.9' 'sqlalchemy>=2' 'pandas>=2'
fi

# psql 16 (for `\bind`; Debian bookworm's psql is 15), from PyPI's pgserver, which bundles
# PostgreSQL 16's binaries.
if ! python3 -c "import pgserver" >/dev/null 2>&1; then
  echo "clients.sh: pip install pgserver"
  python3 -m pip install --quiet --disable-pip-version-check 'pgserver==0.1.4'
fi

# node-postgres, into server/tests/clients/node_modules (gitignored) from its package.json.
if [ ! -f server/tests/clients/node_modules/pg/package.json ]; then
  echo "clients.sh: npm install pg into server/tests/clients"
  (cd server/tests/clients && npm install --no-audit --no-fund --loglevel=error)
fi
