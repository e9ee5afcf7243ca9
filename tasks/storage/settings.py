"""The one place that reads the environment.

Every other module asks :func:`get_settings` instead of touching ``os.environ``. Secrets are held as
``SecretStr`` so that printing or logging a ``Settings`` object never shows them, and they are only
unwrapped in :meth:`Settings.storage_options`, which is handed straight to fsspec.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Environment-driven settings (prefix ``MIDIPIX_``; AWS credentials also by their usual names)."""

    model_config = SettingsConfigDict(env_prefix="MIDIPIX_", extra="ignore", frozen=True)

    store: str = Field("./midipix-data", description="Default artifact store: a folder or s3://bucket/prefix")
    cache_dir: Path = Field(Path(".midipix-cache"), description="Local cache: downloads, generated corpus")
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("MIDIPIX_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    )
    s3_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("MIDIPIX_S3_REGION", "AWS_DEFAULT_REGION", "AWS_REGION")
    )
    aws_access_key_id: SecretStr | None = Field(
        None, validation_alias=AliasChoices("MIDIPIX_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("MIDIPIX_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    maestro_url: str | None = Field(None, description="Override the MAESTRO archive URL (mirrors, tests)")
    maestro_full_url: str | None = Field(None, description="Override the URL of MAESTRO's full archive (with audio)")
    download_max_bytes: int = Field(8 * 1024**3, description="Cap on bytes extracted from one archive")

    def storage_options(self, uri: str) -> dict:
        """fsspec ``storage_options`` for ``uri``: empty for local paths, endpoint and keys for s3://."""
        if not uri.startswith(("s3://", "s3a://")):
            return {}
        opts: dict = {"client_kwargs": {"region_name": self.s3_region}}
        if self.s3_endpoint_url:
            opts["endpoint_url"] = self.s3_endpoint_url
        if self.aws_access_key_id is not None and self.aws_secret_access_key is not None:
            opts["key"] = self.aws_access_key_id.get_secret_value()
            opts["secret"] = self.aws_secret_access_key.get_secret_value()
        return opts


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def reload_settings() -> Settings:
    """Forget the cached settings and read the environment again (tests, long-lived workers)."""
    get_settings.cache_clear()
    return get_settings()


PREFECT_DEFAULTS = {
    # the ephemeral server's usage telemetry cannot reach the internet from CI or air-gapped hosts
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
}


def apply_prefect_defaults() -> None:
    """Set midipix's Prefect defaults in the environment unless the user set them (call before import)."""
    import os

    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
