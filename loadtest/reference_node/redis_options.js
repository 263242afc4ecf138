// node-redis client options for a REDIS_URL as the project writes them: node-redis takes
// redis:// and rediss:// URLs; a unix:// one (the project's embedded Redis,
// unix:///path/redis.sock?db=N) becomes a socket path.
"use strict";

function redisOptions(url) {
  if (!url.startsWith("unix:")) return { url };
  const parsed = new URL(url);
  const db = parsed.searchParams.get("db");
  return { socket: { path: decodeURIComponent(parsed.pathname) }, database: db ? Number(db) : 0 };
}

module.exports = { redisOptions };
