"""What the tests share, one module per need.

- ``settings``: ``make_settings``, the settings of one test (prefix, tmp state, key).
- ``cleanup``: ``topics_cleaned_up``, every topic a test's prefix owns deleted at its end.
- ``polling``: ``wait_until`` / ``eventually`` (deadlines), ``within_turns`` (no clock).
- ``servers``: ``serve`` an ASGI app on loopback (plain or TLS), and ``Receiver``,
  the one HTTP receiver deliveries go to.
- ``pipeline``, ``e2e``: worker processes, destinations, scenarios of the pipeline tests.
"""
