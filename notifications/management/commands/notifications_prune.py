"""``manage.py notifications_prune --read-older-than-days N``: retention of read notifications.

Deletes notifications that were read more than N days ago, in batches of primary keys so that
no statement locks or scans the whole table at once; unread ones are never touched. Meant for
cron: idempotent, prints what it deleted. Clients are not told (the rows are old and read, and
no unread count changes); lists fetched later simply no longer contain them.

It also deletes the stored answers of ``POST /api/notifications/`` whose ``Idempotency-Key``
expired (``RENUM_NOTIFICATIONS["IDEMPOTENCY_TTL_S"]``): requests prune their own caller's,
and this removes those of callers that stopped calling.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from notifications.conf import setting
from notifications.models import IdempotentRequest, Notification


class Command(BaseCommand):
    """Delete read notifications whose ``read_at`` is older than a number of days."""

    help = "Delete notifications read more than N days ago, in batches."

    def add_arguments(self, parser) -> None:  # noqa: ANN001 - argparse parser
        """Declare the command's arguments."""
        parser.add_argument("--read-older-than-days", type=int, required=True, dest="days",
                            help="delete notifications read more than this many days ago (at least 1)")
        parser.add_argument("--batch-size", type=int, default=5000, help="rows per DELETE (default 5000)")
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")

    def handle(self, *args, days: int, batch_size: int, dry_run: bool, **options) -> None:
        """Delete batch after batch until none is left, then report."""
        if days < 1:
            raise CommandError("--read-older-than-days must be at least 1")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        cutoff = timezone.now() - timedelta(days=days)
        # Read before the cutoff implies created before it: the created_at index narrows the scan.
        stale = Notification.objects.filter(created_at__lt=cutoff, read_at__lt=cutoff)
        if dry_run:
            self.stdout.write(f"would delete {stale.count()} notification(s) read before {cutoff.isoformat()}")
            return
        deleted = batches = 0
        while True:
            # Ids first, then a DELETE by primary key: one short statement per batch on every
            # database (DELETE ... LIMIT is not portable). No ORDER BY: any matching rows will do.
            ids = list(stale.order_by().values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            _, per_model = Notification.objects.filter(pk__in=ids).delete()
            deleted += per_model.get(Notification._meta.label, 0)
            batches += 1
        self.stdout.write(f"deleted {deleted} notification(s) read before {cutoff.isoformat()} in {batches} batch(es)")
        expired_before = timezone.now() - timedelta(seconds=setting("IDEMPOTENCY_TTL_S"))
        expired, _ = IdempotentRequest.objects.filter(created_at__lt=expired_before).delete()
        self.stdout.write(f"deleted {expired} expired idempotency key(s)")
