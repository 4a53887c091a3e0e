"""auditrelay: a workspace's audit events, streamed to customers' SIEMs through Kafka.

One import namespace. Its rooms, and the one job of each (docs/architecture.md):

- ``auditrelay.schemas``: the wire contract in code (envelope, catalogue, topics,
  records between stages, settings, the exception tree); imports nothing of ours.
- ``auditrelay.producer``: what services embed to emit events; imports only schemas.
- ``auditrelay.agents``: the pipeline's stages (router, delivery, retry, archive,
  retention) and the worker's composition root.
- ``auditrelay.api``: the management API and the settings page.
- ``auditrelay.wire``: the delivery wire: SSRF rules, the one HTTP client, signing,
  headers, secrets at rest, outcomes of an attempt, the retry schedule.
- ``auditrelay.kafka``: the Kafka toolkit: clients, admin, rounds, partition runners.
- ``auditrelay.tables``: state kept from compacted topics (destinations, delivery status).
- ``auditrelay.store``: the relational store: ORM, migrations, engine, outbox.
- ``auditrelay.observability``: metrics, the offsets collector, logs.
- ``auditrelay.ops``: the CLI and local provisioning; the outer layer nobody imports.

In the repository the card's folders (``agents``, ``api``, ``ops``, ``producer``,
``schemas``) sit at the top level and are linked in here; the shared rooms live
here. Only ``auditrelay`` is installed into site-packages.
"""
