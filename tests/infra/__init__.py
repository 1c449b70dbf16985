"""Real infrastructure for test sessions: a Kafka broker (or a cluster of them) and a PostgreSQL server,
each started on free ports / a private socket in a temporary folder, and stopped again.

Plain functions, not fixtures, so that conftest.py decides the scope::

    broker = start_kafka_broker()        # broker.bootstrap_servers == "127.0.0.1:<free port>"
    postgres = start_postgres()          # postgres.url (SQLAlchemy), postgres.dsn (asyncpg)
    cluster = KafkaCluster.start(3)      # three brokers, replicated topics; cluster.kill(node) ...
    ...
    broker.stop(); postgres.stop(); cluster.stop()

Each blocks until the servers answer, and each also stops at interpreter exit if nobody called stop().
"""

from tests.infra.kafka_broker import KafkaBroker, start_kafka_broker
from tests.infra.kafka_cluster import KafkaCluster
from tests.infra.postgres_server import PostgresServer, start_postgres

__all__ = ["KafkaBroker", "KafkaCluster", "PostgresServer", "start_kafka_broker", "start_postgres"]
