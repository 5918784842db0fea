"""Laravel-style validation, enough to reject what Coolify rejects, and the rules of the
routes the ledger calls (Coolify's own field whitelists)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from starlette.responses import JSONResponse

from ledger.application.ports import ENV_KEY_PATTERN
from ledger.devtools.fake_coolify.calls import Abort, message

__all__ = [
    "ACTION_KEYS",
    "CREATE_REQUIRED",
    "CREATE_RULES",
    "ENV_FLAGS",
    "ENV_FLAG_DEFAULTS",
    "ENV_RULES",
    "UPDATE_RULES",
    "field_errors",
    "integer",
    "is_numeric",
    "is_true",
    "not_allowed",
    "php_truthy",
    "query_flag",
    "request_validation_failed",
    "stored_description",
    "strip_tags",
    "validation_failed",
]

Check = Callable[[str, object], str | None]


def _label(field_name: str) -> str:
    return field_name.replace("_", " ")


def _string(max_length: int | None = None, pattern: str | None = None) -> Check:
    def check(name: str, value: object) -> str | None:
        if not isinstance(value, str):
            return f"The {_label(name)} field must be a string."
        if max_length is not None and len(value) > max_length:
            return f"The {_label(name)} field must not be greater than {max_length} characters."
        if pattern is not None and not re.fullmatch(pattern, value):
            return f"The {_label(name)} field format is invalid."
        return None

    return check


def _boolean(name: str, value: object) -> str | None:
    if value in (True, False, 0, 1, "0", "1") and not isinstance(value, float):
        return None
    return f"The {_label(name)} field must be true or false."


def integer(name: str, value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return None
    return f"The {_label(name)} field must be an integer."


def _array(name: str, value: object) -> str | None:
    return None if isinstance(value, list) else f"The {_label(name)} field must be an array."


def _rules(checker: Check, names: str) -> dict[str, Check]:
    return dict.fromkeys(names.split(), checker)


_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = (
    rf"(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
"""A Docker image reference: optional registry host, lowercase path, optional tag or digest."""

# Whitelist of POST /applications/dockerimage (AppCtl $allowedFields, spec l.1515-1785).
_STRING_FIELDS = """
    project_uuid server_uuid environment_name environment_uuid destination_uuid ports_mappings
    description domains health_check_type health_check_command health_check_path
    health_check_port health_check_host health_check_method health_check_scheme
    health_check_response_text limits_memory limits_memory_swap limits_memory_reservation
    limits_cpus limits_cpuset custom_labels custom_docker_run_options pre_deployment_command
    pre_deployment_command_container post_deployment_command post_deployment_command_container
    manual_webhook_secret_github manual_webhook_secret_gitlab manual_webhook_secret_bitbucket
    manual_webhook_secret_gitea redirect gpu_driver gpu_count gpu_device_ids gpu_options
    custom_internal_name preview_url_template http_basic_auth_username http_basic_auth_password
"""
_BOOLEAN_FIELDS = """
    instant_deploy autogenerate_domain force_domain_override health_check_enabled
    is_force_https_enabled is_preview_deployments_enabled use_build_server use_build_secrets
    is_git_submodules_enabled is_git_lfs_enabled is_git_shallow_clone_enabled
    disable_build_cache inject_build_args_to_dockerfile include_source_commit_in_build
    is_env_sorting_enabled is_pr_deployments_public_enabled is_gzip_enabled
    is_stripprefix_enabled is_raw_compose_deployment_enabled is_log_drain_enabled
    is_gpu_enabled is_consistent_container_name_enabled is_http_basic_auth_enabled
    connect_to_docker_network is_container_label_escape_enabled
"""
_INTEGER_FIELDS = """
    health_check_return_code health_check_interval health_check_timeout health_check_retries
    health_check_start_period limits_memory_swappiness limits_cpu_shares stop_grace_period
    docker_images_to_keep max_restart_count
"""
CREATE_RULES: dict[str, Check] = {
    **_rules(_string(), _STRING_FIELDS),
    **_rules(_boolean, _BOOLEAN_FIELDS),
    **_rules(integer, _INTEGER_FIELDS),
    **_rules(_array, "tags noindex_domains"),
    "docker_registry_image_name": _string(max_length=255, pattern=_IMAGE_REFERENCE),
    "docker_registry_image_tag": _string(pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
    "ports_exposes": _string(pattern=r"\d+(,\d+)*"),
    "name": _string(max_length=255),
}
CREATE_REQUIRED = ("project_uuid", "server_uuid", "docker_registry_image_name")
# Keys that place or create the app: the update whitelist rejects them (API.md §4).
_PLACEMENT_KEYS = frozenset(
    {"project_uuid", "server_uuid", "environment_name", "environment_uuid", "destination_uuid"}
    | {"autogenerate_domain", "tags"}
)
UPDATE_RULES = {name: rule for name, rule in CREATE_RULES.items() if name not in _PLACEMENT_KEYS}
# Request-only keys that are not columns of the application.
ACTION_KEYS = _PLACEMENT_KEYS | {"instant_deploy", "force_domain_override", "domains"}

ENV_FLAGS = (
    "is_preview",
    "is_literal",
    "is_multiline",
    "is_shown_once",
    "is_runtime",
    "is_buildtime",
)
ENV_FLAG_DEFAULTS = {flag: flag in ("is_runtime", "is_buildtime") for flag in ENV_FLAGS}
ENV_RULES: dict[str, Check] = {
    "key": _string(max_length=255, pattern=ENV_KEY_PATTERN),
    "value": _string(),
    "comment": _string(max_length=256),
    **dict.fromkeys(ENV_FLAGS, _boolean),
}


def not_allowed(body: Mapping[str, object], allowed: Mapping[str, Check]) -> dict[str, list[str]]:
    """The keys outside a route's whitelist (``$allowedFields``)."""
    return {key: ["This field is not allowed."] for key in body if key not in allowed}


def field_errors(
    body: Mapping[str, object], rules: Mapping[str, Check], required: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """The validator's errors for the keys that have rules (others are ignored here).

    Routes combine them with :func:`not_allowed` as Coolify does: create reports not-allowed
    keys on their own, before any other rule runs; update and the env routes add them to the
    validator's errors (``$errors->add``).
    """
    errors = {
        key: [f"The {_label(key)} field is required."] for key in required if body.get(key) is None
    }
    for key, value in body.items():
        rule = rules.get(key)
        problem = None if value is None or rule is None else rule(key, value)
        if problem is not None:
            errors[key] = [problem]
    return errors


def validation_failed(errors: Mapping[str, list[str] | str]) -> Abort:
    """The controllers' hand-made 422."""
    return Abort(JSONResponse({"message": "Validation failed.", "errors": errors}, 422))


def request_validation_failed(errors: Mapping[str, list[str]]) -> Abort:
    """Laravel's own 422 for ``$request->validate``: the first message, then how many more."""
    messages = [text for texts in errors.values() for text in texts]
    summary = messages[0]
    if len(messages) > 1:
        more = len(messages) - 1
        summary += f" (and {more} more {'error' if more == 1 else 'errors'})"
    return Abort(JSONResponse({"message": summary, "errors": errors}, 422))


def is_numeric(text: str) -> bool:
    """PHP's ``is_numeric`` on a string (leading and trailing whitespace allowed)."""
    return re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", text) is not None


def php_truthy(value: object) -> bool:
    """A request value cast to ``bool`` by PHP: only null, false, 0, "0" and "" are false
    (so the string ``"false"`` is true)."""
    return value not in (None, False, 0, "0", "")


def strip_tags(text: str) -> str:
    """Roughly PHP's strip_tags: drops ``<...>`` and an unclosed ``<`` to the end."""
    return re.sub(r"<[^>]*(>|$)", "", text)


def stored_description(value: object) -> str:
    """strip_tags, null stored as "", and varchar(255) overflowing into a DB error (500)."""
    description = strip_tags(value) if isinstance(value, str) else ""
    if len(description) > 255:
        raise message(500, "Server Error")
    return description


def is_true(value: object) -> bool:
    """A value that passed Laravel's ``boolean`` rule, read as true."""
    return value in (True, 1, "1")


def query_flag(value: str | None, default: bool) -> bool:
    """Laravel's ``$request->boolean()``."""
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "on", "yes"}
