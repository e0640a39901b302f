"""How `make airflow-up`'s Airflow connects to its SQLite metadata database
(AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=mnist_sqlite.CONNECT_ARGS; this folder is on every Airflow process's
path as its plugins folder).

The scheduler, the dag processor, the api-server, every task runner and every `airflow` command write to the one
SQLite file, one writer at a time (Airflow turns WAL on, which lets readers through). A writer waits for the
others up to a busy timeout, pysqlite's 5 s by default: on a loaded 2-core machine the scheduler's transactions
took longer, and `airflow backfill create` failed with "database is locked". A minute is long enough for any of
them, and short enough that a real deadlock still ends. Postgres is the choice for more than one machine.
"""
BUSY_TIMEOUT_SECONDS = 60

CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_SECONDS}          # sqlite3.connect (the sync engine)
CONNECT_ARGS_ASYNC = {"timeout": BUSY_TIMEOUT_SECONDS}    # aiosqlite.connect, which passes it to sqlite3
