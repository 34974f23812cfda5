"""Store housekeeping: what the records reference (:mod:`.references`), gc (:mod:`.gc`), du (:mod:`.usage`)."""
