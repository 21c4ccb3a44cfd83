"""Global scheduler actors beside ``accounts`` in the root supervisor: auto-backfill (with
thread repair) and recent-sync. Their pure rules live in ``policy`` and ``gaps``; ``lease``
guards their work cluster-wide; ``view`` is what they see of the accounts this instance runs."""
