"""The Kafka toolkit: aiokafka clients (``clients``), admin operations (``admin``),
reading a topic in rounds (``rounds``) and one task per assigned partition
(``partitions``). Nothing here knows what an audit event is."""
