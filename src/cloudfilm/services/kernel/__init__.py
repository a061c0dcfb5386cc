"""The shared kernel of the service packages: who asks (:class:`Actor`, its roles and
permissions), who delivered (:class:`Sender`), UID and UTC helpers.

It imports nothing else of ``cloudfilm.services`` (an import-linter contract keeps it so),
so every service package can depend on it without importing another package: archive and
reports, identity and access stopped importing each other through it.
"""

from cloudfilm.services.kernel.actor import (
    LOCAL_OPERATOR,
    ROLE_PERMISSIONS,
    Actor,
    ActorKind,
    Permission,
    Role,
)
from cloudfilm.services.kernel.sender import Sender
from cloudfilm.services.kernel.time import aware, utc_now
from cloudfilm.services.kernel.uids import UID_MAX, StudyUID

__all__ = [
    "LOCAL_OPERATOR",
    "ROLE_PERMISSIONS",
    "UID_MAX",
    "Actor",
    "ActorKind",
    "Permission",
    "Role",
    "Sender",
    "StudyUID",
    "aware",
    "utc_now",
]
