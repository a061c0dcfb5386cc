"""Who is asking (re-exported from the shared kernel, ``services.kernel.actor``, where the
definitions live so that every service package can use them without importing
``services.access``)."""

from cloudfilm.services.kernel.actor import (
    LOCAL_OPERATOR,
    ROLE_PERMISSIONS,
    Actor,
    ActorKind,
    Permission,
    Role,
)

__all__ = ["LOCAL_OPERATOR", "ROLE_PERMISSIONS", "Actor", "ActorKind", "Permission", "Role"]
