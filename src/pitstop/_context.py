"""``with`` / ``async with`` for objects that close: managers and stores."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``with obj:`` runs ``_entered()`` (default: nothing), then ``close()`` on exit."""

    def _entered(self) -> None:
        return None

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._entered()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClosing:
    """``async with obj:`` runs ``_entered()``, then ``await aclose()`` on exit."""

    def _entered(self) -> None:
        return None

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._entered()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
