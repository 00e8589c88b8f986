"""Configuration from the environment (DESIGN §11)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from papayya.metering.meter import Upstream
from papayya.metering.providers import Provider
from papayya.metering.upstreams import upstreams_from_env
from papayya.processruntime import ProcessRuntimePolicy


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".papayya"))
    host: str = "127.0.0.1"
    port: int = 8080
    # Keep the read models up to date inside this process (off for `papayya api` scale-out).
    run_projectors: bool = True
    # Fire cron schedules inside this process (several processes may: each fire runs once).
    run_scheduler: bool = True
    # The dispatcher (store → Redis), the recovery sweeper and callbacks (`papayya scheduler`).
    run_dispatcher: bool = True
    # A worker with the process runtime (`papayya worker`).
    run_worker: bool = True
    worker_concurrency: int = 4
    # Where agents reach the runtime API and the gateway: over TCP, and over a Unix socket.
    control_url: str | None = None
    # The Redis stream runs are queued on: separate names let deployments share one Redis.
    queue_name: str = "papayya:runs"
    runtime_socket: Path | None = None
    # Deploys (DESIGN §8): bundles in S3 (else under data_dir), images from base_image,
    # pushed to registry (else kept in the local engine); builds run in this process.
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    registry: str | None = None
    base_image: str = "papayya/python-base:bookworm"
    run_builder: bool = True
    # Security (docs/security.md): callbacks to private, loopback and link-local addresses
    # are refused unless allowed; an address with auth_failure_limit failed API-key checks
    # within auth_failure_window_seconds gets 429 (0 turns that off).
    callback_allow_private: bool = False
    auth_failure_limit: int = 20
    auth_failure_window_seconds: float = 60.0
    # /metrics is served on the API's port only to `Authorization: Bearer <metrics_token>`,
    # and without a token on an address of its own, metrics_listen ("host:port"); with
    # neither, not at all (web.routes.metrics).
    metrics_token: str | None = None
    metrics_listen: str | None = None
    # Whose agents may run as local processes (PAPAYYA_PROCESS_RUNTIME; papayya/processruntime.py).
    process_runtime: ProcessRuntimePolicy = field(default_factory=ProcessRuntimePolicy)
    # Seals project secrets at rest (PAPAYYA_SECRETS_KEY; unset: a key file under data_dir,
    # papayya/secretbox.py). Never in a repr, so never in a log line of the config.
    secrets_key: str | None = field(default=None, repr=False)
    # The providers' base URLs and keys (PAPAYYA_{OPENAI,ANTHROPIC}_{BASE_URL,API_KEY}), read
    # when the configuration is made: a worker drops the keys from its environment before
    # the built-in agent loop (workers.agentloop) calls a model with them. Never in a repr.
    upstreams: dict[Provider, Upstream] = field(
        default_factory=lambda: upstreams_from_env(), repr=False
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Config:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {
            "database_url": env.get("PAPAYYA_DATABASE_URL") or None,
            "redis_url": env.get("PAPAYYA_REDIS_URL") or None,
            "data_dir": Path(env.get("PAPAYYA_DATA_DIR") or ".papayya"),
            "s3_endpoint": env.get("PAPAYYA_S3_ENDPOINT") or None,
            "s3_bucket": env.get("PAPAYYA_S3_BUCKET") or None,
            "registry": env.get("PAPAYYA_REGISTRY") or None,
            "base_image": env.get("PAPAYYA_BASE_IMAGE") or cls.base_image,
            "control_url": env.get("PAPAYYA_CONTROL_URL") or None,
            "queue_name": env.get("PAPAYYA_QUEUE_NAME") or "papayya:runs",
            "runtime_socket": Path(env["PAPAYYA_RUNTIME_SOCKET"])
            if env.get("PAPAYYA_RUNTIME_SOCKET")
            else None,
            "callback_allow_private": _flag(env.get("PAPAYYA_CALLBACK_ALLOW_PRIVATE")),
            "auth_failure_limit": int(env.get("PAPAYYA_AUTH_FAILURE_LIMIT") or 20),
            "auth_failure_window_seconds": float(
                env.get("PAPAYYA_AUTH_FAILURE_WINDOW_SECONDS") or 60.0
            ),
            "metrics_token": env.get("PAPAYYA_METRICS_TOKEN") or None,
            "metrics_listen": env.get("PAPAYYA_METRICS_LISTEN") or None,
            "process_runtime": ProcessRuntimePolicy.parse(env.get("PAPAYYA_PROCESS_RUNTIME")),
            "secrets_key": env.get("PAPAYYA_SECRETS_KEY") or None,
            "upstreams": upstreams_from_env(env),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
