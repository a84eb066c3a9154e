"""The e-ID test kit: run the real service inside a relying party's own test suite
(``eid serve --demo`` + a pytest plugin, entry point ``pytest11``: ``eid``)."""

from app.testing.client import EidLoginError, EidServer, start_demo_server

__all__ = ["EidLoginError", "EidServer", "start_demo_server"]
