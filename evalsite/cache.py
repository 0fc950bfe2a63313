"""Django's Redis cache, keeping one redis-py client per connection pool.

Django's RedisCacheClient makes a new ``redis.Redis`` for every command, and redis-py 8 fills
about 170 response callbacks into each new client: about 0.5 ms of CPU per cache command. A
signed-in request of the annotator loop makes two or three (its session, the rate limit's read
and write), so that was a third of the app's CPU per request (cProfile of next-pair -> vote).
A ``redis.Redis`` is safe to share: it takes a connection from its pool for each command, and
the pool reconnects after a fork.
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class _SharedClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _SharedClient
