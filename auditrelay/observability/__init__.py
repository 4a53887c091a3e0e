"""What operators see: Prometheus metrics (``metrics``), the worker's Kafka gauges
(``collector``) and log output (``logs``)."""
