"""run: `loragen serve` — check the binding, build the app and serve it with uvicorn until interrupted."""

from __future__ import annotations

from loragen.serve.config import ServeConfig


def run(config: ServeConfig, log_level: str = "info") -> None:
    """Serve until Ctrl-C. The config already refused a non-loopback host without an API key file."""
    import uvicorn

    from loragen.serve.app import create_app

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                limit_concurrency=config.queue_size * 4, timeout_keep_alive=30)
