"""Transition: projects and API keys moved to ``papayya.readmodels.projects`` (the server
uses its ``Projects`` repository, ``keys.PROJECTS``). Kept for the modules outside the read
models that still import them from here (the app's bootstrap, the gateway, the operator CLI)."""

from papayya.readmodels import Db
from papayya.readmodels.projects import (
    BOOTSTRAP_ENV,
    BOOTSTRAP_LOCK,
    KEY_PREFIX,
    KEY_SHAPE,
    ApiKey,
    NewApiKey,
    Project,
    Q,
    authenticate,
    authenticate_key,
    bootstrap,
    check_bootstrap_key,
    check_key_shape,
    create_key,
    create_project,
    get_project,
    hash_key,
    list_keys,
    new_id,
    project_by_name,
    revoke_key,
)

__all__ = [
    "BOOTSTRAP_ENV",
    "BOOTSTRAP_LOCK",
    "KEY_PREFIX",
    "KEY_SHAPE",
    "ApiKey",
    "Db",
    "NewApiKey",
    "Project",
    "Q",
    "authenticate",
    "authenticate_key",
    "bootstrap",
    "check_bootstrap_key",
    "check_key_shape",
    "create_key",
    "create_project",
    "get_project",
    "hash_key",
    "list_keys",
    "new_id",
    "project_by_name",
    "revoke_key",
]
