"""How `make airflow-up`'s Airflow connects to its SQLite metadata database
(AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=mnist_sqlite.CONNECT_ARGS; this folder is on every Airflow process's
path as its plugins folder).

The scheduler, the dag processor, the api-server, every task runner and every `airflow` command write to the one
SQLite file, one writer at a time (Airflow turns WAL on, which lets readers through). A writer waits for the
others up to a busy timeout, pysqlite's 5 s by default: on a loaded 2-core machine the scheduler's transactions
took longer, and `airflow backfill create` failed with "database is locked". A minute is long enough for any of
them, and short enough that a real deadlock still ends. Postgres is the choice for more than one machine.

The timeout alone did not do: a transaction begun DEFERRED takes its snapshot first and the write lock at its
first write; in WAL mode, when another writer committed meanwhile, SQLite answers SQLITE_BUSY at once (the
snapshot is stale, so waiting cannot help) and `backfill create` failed under a busy scheduler all the same.
Transactions begun IMMEDIATE take the write lock first, waiting up to the timeout, then read a fresh snapshot.

pysqlite begins IMMEDIATE only before a write statement, and SAVEPOINT is not one: a SAVEPOINT outside a
transaction begins a DEFERRED one. `backfill create` writes each day's run inside `session.begin_nested()`, and
with the test suite's second worker loading the machine it failed at once again. So a savepoint that would begin
the transaction begins it IMMEDIATE first (`_savepoint_begins_immediate`).
"""
from sqlalchemy import event
from sqlalchemy.engine import Engine

BUSY_TIMEOUT_SECONDS = 60

# sqlite3.connect (the sync engine): pysqlite begins each transaction before its first write, as BEGIN IMMEDIATE
CONNECT_ARGS = {"timeout": BUSY_TIMEOUT_SECONDS, "isolation_level": "IMMEDIATE"}
# aiosqlite.connect, which passes both to sqlite3
CONNECT_ARGS_ASYNC = {"timeout": BUSY_TIMEOUT_SECONDS, "isolation_level": "IMMEDIATE"}


@event.listens_for(Engine, "savepoint")
def _savepoint_begins_immediate(connection, name) -> None:
    """Runs before SQLAlchemy emits SAVEPOINT. Airflow's plugin loader executes this file a second time under its
    own module name, registering a second listener: the first begins the transaction, the second finds it begun."""
    if connection.dialect.name == "sqlite" and not connection.connection.driver_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
