"""Running the collector under uvicorn (one process or several workers)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from fastapi import FastAPI

from leakcheck.collector.settings import Settings

ENV = "LEAKCHECK_COLLECTOR_SETTINGS"


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings travel as JSON in the
    environment because workers re-import the app rather than inherit it."""
    from leakcheck.collector.app import create_app
    return create_app(Settings(**json.loads(os.environ[ENV])), run_migrations=False)


def serve(settings: Settings, host: str, port: int, workers: int = 1,
          certfile: str | None = None, keyfile: str | None = None) -> None:
    import uvicorn

    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import migrate

    # Migrate once, before any worker starts taking requests.
    engine = make_engine(settings.url)
    migrate(engine)
    engine.dispose()
    os.environ[ENV] = json.dumps(asdict(settings))
    uvicorn.run("leakcheck.collector.server:app_from_env", factory=True, host=host, port=port,
                workers=workers, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
                access_log=False, proxy_headers=False, server_header=False)
