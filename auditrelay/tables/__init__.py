"""State kept in memory from compacted topics, and its writers: the destination
registry (``audit.destinations``) and delivery status (``audit.delivery-status``,
``audit.delivery-attempts``)."""
