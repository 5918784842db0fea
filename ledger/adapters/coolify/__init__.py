"""Coolify v4 API access: a typed, retrying client, its models and its errors.

The fake Coolify server lives in :mod:`ledger.coolify.fake` and is not imported here, so that
production code does not pull in the web server it needs.
"""

from ledger.adapters.coolify.client import CoolifyClient, ResponseHook
from ledger.adapters.coolify.errors import (
    CoolifyBadResponse,
    CoolifyConflict,
    CoolifyError,
    CoolifyForbidden,
    CoolifyNotFound,
    CoolifyRateLimited,
    CoolifyServerError,
    CoolifyUnauthorized,
    CoolifyUnavailable,
    CoolifyValidationError,
)
from ledger.adapters.coolify.models import (
    DESCRIPTION_MAX_LENGTH,
    AppStatus,
    CoolifyApplication,
    CoolifyDeployment,
    CreatedApp,
    CreateDockerImageApp,
    DeploymentPage,
    DeploymentStatus,
    EnvVar,
    StartResult,
    StoredEnvVar,
    clean_description,
)

__all__ = [
    "DESCRIPTION_MAX_LENGTH",
    "AppStatus",
    "CoolifyApplication",
    "CoolifyBadResponse",
    "CoolifyClient",
    "CoolifyConflict",
    "CoolifyDeployment",
    "CoolifyError",
    "CoolifyForbidden",
    "CoolifyNotFound",
    "CoolifyRateLimited",
    "CoolifyServerError",
    "CoolifyUnauthorized",
    "CoolifyUnavailable",
    "CoolifyValidationError",
    "CreateDockerImageApp",
    "CreatedApp",
    "DeploymentPage",
    "DeploymentStatus",
    "EnvVar",
    "ResponseHook",
    "StartResult",
    "StoredEnvVar",
    "clean_description",
]
