"""Real infrastructure for test sessions: a Kafka broker and a PostgreSQL server, each started on free
ports / a private socket in a temporary folder, and stopped again.

Plain functions, not fixtures, so that conftest.py decides the scope::

    broker = start_kafka_broker()        # broker.bootstrap_servers == "127.0.0.1:<free port>"
    postgres = start_postgres()          # postgres.url (SQLAlchemy), postgres.dsn (asyncpg)
    ...
    broker.stop(); postgres.stop()

Both block until the server answers. Both also stop at interpreter exit if nobody called stop().
"""

from tests.infra.kafka_broker import KafkaBroker, start_kafka_broker
from tests.infra.postgres_server import PostgresServer, start_postgres

__all__ = ["KafkaBroker", "PostgresServer", "start_kafka_broker", "start_postgres"]
