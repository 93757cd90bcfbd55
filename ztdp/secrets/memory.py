"""Secret records in this process's memory: the embedded default, gone with the process."""

from __future__ import annotations

from collections.abc import AsyncIterator

Key = tuple[str, str, str]


class MemoryRecords:
    def __init__(self) -> None:
        self._data: dict[Key, str] = {}

    async def get(self, application: str, environment: str, name: str) -> str | None:
        return self._data.get((application, environment, name))

    async def scope(self, application: str, environment: str) -> dict[str, str]:
        return {
            n: raw for (a, e, n), raw in self._data.items() if (a, e) == (application, environment)
        }

    async def everything(self) -> AsyncIterator[tuple[str, str, str, str]]:
        for (a, e, n), raw in list(self._data.items()):
            yield a, e, n, raw

    async def create(self, application: str, environment: str, name: str, record: str) -> bool:
        key = (application, environment, name)
        if key in self._data:
            return False
        self._data[key] = record
        return True

    async def replace(
        self, application: str, environment: str, name: str, old: str, new: str
    ) -> bool:
        key = (application, environment, name)
        if self._data.get(key) != old:
            return False
        self._data[key] = new
        return True

    async def remove(self, application: str, environment: str, name: str) -> bool:
        return self._data.pop((application, environment, name), None) is not None

    async def aclose(self) -> None:
        return None
