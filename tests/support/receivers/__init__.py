"""Strict fakes of the receivers of each destination kind, written from the vendors' docs."""
