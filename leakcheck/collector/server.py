"""Running the collector under uvicorn (one process or several workers).

Workers re-import the app rather than inherit it, so the settings reach
them through a file: a private (0600) JSON file whose path is the only
thing in the environment. Secrets stay in their own files (the enrollment
secret, the database password), read by each worker; no secret is ever in
a worker's environment or command line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from fastapi import FastAPI

from leakcheck.collector.settings import Settings

ENV = "LEAKCHECK_COLLECTOR_SETTINGS_FILE"


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes."""
    from leakcheck.collector.app import create_app
    settings = Settings(**json.loads(Path(os.environ[ENV]).read_text(encoding="utf-8")))
    return create_app(settings.resolved(), run_migrations=False)


def worker_settings(settings: Settings) -> dict:
    """What workers are told: no secret values, only the files holding them."""
    if settings.enroll_secret and not settings.enroll_secret_file:
        raise ValueError("the enrollment secret must come from a file (enroll_secret_file)")
    return asdict(replace(settings, enroll_secret=""))


def serve(settings: Settings, host: str, port: int, workers: int = 1,
          certfile: str | None = None, keyfile: str | None = None) -> None:
    import uvicorn

    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import migrate
    from leakcheck.collector.store import Store

    # Migrate once, before any worker starts taking requests.
    engine = make_engine(settings.url)
    migrate(engine)
    Store(engine).ensure_partitions(time.time())  # today's and the next days' (PostgreSQL)
    engine.dispose()
    private = Path(tempfile.mkdtemp(prefix="leakcheck-collector-"))  # 0700
    try:
        path = private / "settings.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(worker_settings(settings), out)
        os.environ[ENV] = str(path)
        uvicorn.run("leakcheck.collector.server:app_from_env", factory=True, host=host, port=port,
                    workers=workers, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
                    access_log=False, proxy_headers=False, server_header=False)
    finally:
        shutil.rmtree(private, ignore_errors=True)
