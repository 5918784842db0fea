"""Coolify v4 API access: a typed, retrying client and its models.

The client implements the application's :class:`ledger.application.ports.Coolify` port; the
request models it takes are the port's and its errors are in :mod:`ledger.errors`, both
re-exported here. The fake Coolify server lives in :mod:`ledger.devtools.fake_coolify` and
is not imported here, so that production code does not pull in the web server it needs.
"""

from ledger.adapters.coolify.client import CoolifyClient, ResponseHook
from ledger.adapters.coolify.models import (
    AppStatus,
    CoolifyApplication,
    CoolifyDeployment,
    CreatedApp,
    DeploymentPage,
    StartResult,
    StoredEnvVar,
)
from ledger.application.ports import (
    DESCRIPTION_MAX_LENGTH,
    CreateDockerImageApp,
    DeploymentStatus,
    EnvVar,
    clean_description,
)
from ledger.errors import (
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
