"""The relational store: the ORM (``db``), its Alembic migrations, the engine and
sessions (``engine``), the Kafka outbox, and the changes the worker makes to
destinations (``mutations``)."""
