"""The Kafka toolkit: aiokafka clients (``clients``), admin operations (``admin``),
reading a topic in rounds (``rounds``), one task per assigned partition
(``partitions``), reading a whole topic to its end or catching up then following
it (``topic_reader``) and the backoff of every retry loop (``backoff``). Nothing
here knows what an audit event is."""
