"""The OpenAI-compatible server (``bestofn serve``): ``app`` (routes), ``protocol`` (request
and response shapes), ``batcher`` (micro-batching onto the engine), ``errors``."""

from bestofn.server.app import create_app, run_server, serve_in_thread

__all__ = ["create_app", "run_server", "serve_in_thread"]
