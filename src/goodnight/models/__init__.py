"""ORM models, one file per table. Importing this package registers every table on ``Base.metadata``."""

from goodnight.models.follow import Follow
from goodnight.models.outbox import OutboxEvent
from goodnight.models.sleep_record import SleepRecord
from goodnight.models.token_revocation import TokenRevocation
from goodnight.models.user import User

__all__ = ["Follow", "OutboxEvent", "SleepRecord", "TokenRevocation", "User"]
