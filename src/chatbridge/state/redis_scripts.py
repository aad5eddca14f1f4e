"""The Lua scripts RedisStore runs, each one atomic on the server.

Times inside scripts are the server's (`TIME`), so replicas with skewed clocks agree on
expiry. Slot keys are sorted sets of holders scored by their expiry in milliseconds.
"""

# KEYS[1] key. ARGV: none. -> false | {value, pttl}
GET = """
local value = redis.call('GET', KEYS[1])
if not value then return false end
return {value, redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] key. ARGV[1] amount, ARGV[2] ttl in ms or "". -> {value as a string, pttl}
# (the value is read back with GET: a Lua number is a double and would round large counters)
INCR = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], '0', 'PX', ARGV[2], 'NX') end
redis.call('INCRBY', KEYS[1], ARGV[1])
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] key. ARGV[1] "1" if a value is expected, ARGV[2] expected, ARGV[3] new value, ARGV[4] ttl ms or "". -> 0 | 1
COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) else redis.call('SET', KEYS[1], ARGV[3]) end
return 1
"""

# KEYS[1] lock, KEYS[2] fence counter. ARGV[1] ttl ms. -> false | fence
ACQUIRE_LOCK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
redis.call('INCR', KEYS[2])
local fence = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence
"""

# KEYS[1] lock. ARGV[1] fence, ARGV[2] ttl ms. -> 0 | 1
EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] lock. ARGV[1] fence. -> 0 | 1
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# A lock taken locally while Redis was away: raise the fence counter to at least its token, and
# take the lock if it is free (or already ours). KEYS[1] lock, KEYS[2] fence counter.
# ARGV[1] fence, ARGV[2] ttl ms. -> 0 | 1
ADOPT_LOCK = """
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if counter < tonumber(ARGV[1]) then redis.call('SET', KEYS[2], ARGV[1]) end  -- fences stay far below 2^53
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_KEEP_KEY_WHILE_HELD = """
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(last[2]))) end
"""

# KEYS[1] slot set. ARGV[1] holder, ARGV[2] cap, ARGV[3] ttl ms. -> 0 | 1
CLAIM_SLOT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
""" + _KEEP_KEY_WHILE_HELD + """
return 1
"""

# KEYS[1] slot set. ARGV[1] holder, ARGV[2] ttl ms. -> 0 | 1
RENEW_SLOT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
""" + _KEEP_KEY_WHILE_HELD + """
return 1
"""

# KEYS[1] slot set. -> live holders
SLOT_HOLDERS = _NOW + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
