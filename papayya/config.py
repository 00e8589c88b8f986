"""Configuration from the environment (DESIGN §11)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Config:
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".papayya"))
    host: str = "127.0.0.1"
    port: int = 8080
    # Keep the read models up to date inside this process (off for `papayya api` scale-out).
    run_projectors: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Config:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {
            "database_url": env.get("PAPAYYA_DATABASE_URL") or None,
            "redis_url": env.get("PAPAYYA_REDIS_URL") or None,
            "data_dir": Path(env.get("PAPAYYA_DATA_DIR") or ".papayya"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
