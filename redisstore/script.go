package redisstore

import "strings"

// transitionLua is the one atomic operation of a change. The Store builds
// one script per effect by inserting the effect's body; all share it.
//
// Keys and arguments are passed by name (see call): ARGV holds name/value
// pairs; a name is "<kind>.<name>", kind k (a key of the change: the value
// is its position in KEYS), a (an argument of the change), K and A (the
// effect's keys and arguments); a name ending in "[]" appends to a list.
// The script reads them into the tables k, a, ek and ea. An argument of
// the change (a) that is empty is left out: a missing one reads "". Flags
// are "1" (true) or left out (false).
//
// Keys: saga (the hash, always KEYS[1]), on a Redis Cluster pending and
// pendings (KEYS[2] and KEYS[3]: the saga's pending change and the
// shard's index of them), due (unfinished sagas by due time), and only
// when the change may write them (see changeCall): created (every saga of
// the definition by creation time) and defs (the definitions seen) for a
// create, s.<status> (one per status the change may leave or enter: see
// indexed), stats (recently finished) for a change that may end the saga,
// key (the business key's index) for a create, an end or a resumption,
// and dl and dlkept (a dead letter and its marker).
//
// Arguments: dedupe (the event's dedupe field), now (unix ms), create,
// accept, version, allow (",a,b,"), step, data, deadline (ms), retention
// (s), saga (definition), id, key, trace, etype, eid, esrc, actor, fail, hasf,
// recent (how many finished sagas stats keeps), and per move (prefix "s."
// success, "f." failure): outcome, status, reason, fstep, push, pop,
// clear, output, type, rid, source, data, own (the reply's data is the
// saga's), due (ms; none when left out); dead letter fields dl.*.
//
// mode (Redis Cluster, see cluster.go) is "one" (default: the whole
// change), "prepare" (check it and store it pending, with btag, its
// effect's hash tag) or "commit" (apply the pending change: the only
// arguments are attempt, eres — the effect's barrier — and dedupe).
//
// It returns {code, version, status, reason, reply type, reply time,
// reply data, status before, reply source}; prepare returns {"prepared" or
// "pending", attempt, tag, version, pending TTL (ms), prepared at (unix ms,
// Redis's clock)}, any change of a saga
// another event's change holds {"busy", attempt, tag, version, TTL,
// dedupe, keys joined by NUL}, and commit {"blocked"} or {"gone"} when it
// applied nothing.
//
// Saga hash fields: sg definition, k business key, tr trace id, st status, v version,
// sp step, ca/ua created/updated (ms), dl deadline (ms), du due (ms, 0
// none), dc + d0..d<dc-1> the data in chunks, rs reason, fs failed step, cp
// compensation stack ("a,b", next first), o.<step> a step's output, n
// history length, l<i> history entries ("at|step|outcome|type|version|
// flags", flags: r a reason is kept at x<version>, n a note), e<i> the
// entry's event ("id\31source"), a<i> its actor, y<i> a note's reason, c<version> redeliveries of
// the event applied at version, x<v> the reason given at version v, nx the
// awaited event ("<reply field>\31<id>"), r<digest> stored replies
// ("version\31type\31time\31reason ref\31flag\31source\31data"; flag "="
// means the saga's data).
//
// Compactness: a finished saga should cost about 1 KiB. Redis keeps a
// small hash as one listpack only while every value is at most
// hash-max-listpack-value (64 bytes by default), so the data is stored in
// 60-byte chunks, up to 64 of them; larger data is one field. Times inside
// history entries and replies are offsets (ms) from ca; event types drop
// the "io.ksaga." prefix ("~").
const transitionLua = `
local function effect(keys, args)
--EFFECT--
end

local sub, byte = string.sub, string.byte
local blank = {__index = function() return '' end} -- a missing argument reads ''
local function parse(argv)
  local k, a, ek, ea = {}, {}, {}, {}
  local t = {[107] = k, [97] = a, [75] = ek, [65] = ea} -- by the kind's byte: k a K A
  for i = 1, #argv, 2 do
    local name, val = argv[i], argv[i + 1]
    local kind = byte(name)
    if kind == 107 or kind == 75 then val = KEYS[tonumber(val)] end
    local tbl = t[kind]
    if byte(name, -1) == 93 and byte(name, -2) == 91 then -- "<kind>.<name>[]": a list
      local key = sub(name, 3, -3)
      local l = tbl[key]
      if not l then l = {} tbl[key] = l end
      l[#l + 1] = val
    else
      tbl[sub(name, 3)] = val
    end
  end
  setmetatable(a, blank)
  return k, a, ek, ea
end
local k, a, ek, ea = parse(ARGV)

-- Redis Cluster (see cluster.go): a change whose effect runs on another
-- node is prepared (stored in k.pending), then committed with the
-- effect's result; meanwhile it holds the saga: any other change answers
-- busy, and its caller resolves the pending change first.
local mode, pk = a.mode, k.pending
if mode == '' then mode = 'one' end
local gone = false
if mode == 'commit' then
  pk = KEYS[2] -- and KEYS[3] the pending changes' index
  local p = redis.call('HMGET', pk, 'n', 'd', 'ks', 'av')
  if p[2] ~= a.dedupe or p[1] ~= a.attempt then
    gone = true -- committed or dropped by someone else (another change may be pending now)
  else
    if p[3] ~= table.concat(KEYS, '\0') then return redis.error_reply('ksaga: commit keys differ from the prepared change') end
    local eres, attempt = a.eres, a.attempt
    k, a, ek, ea = parse(cmsgpack.unpack(p[4]))
    a.eres, a.attempt = eres, attempt
    if eres == 'x' or eres == 'late' then
      -- the effect never ran and never will (its barrier is blocked):
      -- the saga is as it was; the next attempt gets a new barrier
      redis.call('HDEL', pk, 'd', 't', 'v', 'ks', 'av', 'at')
      redis.call('HINCRBY', pk, 'n', 1)
      redis.call('ZREM', KEYS[3], a.id)
      return {'blocked'}
    end
  end
end

local h = KEYS[1] -- k.saga
local now = tonumber(a.now)
local cur = redis.call('HMGET', h, a.dedupe, 'st', 'v', 'n', 'ca', 'cp', 'dc', 'd0', 'd1', 'd2', 'd3', 'sg', 'dl')
local st, v = cur[2], tonumber(cur[3] or '0')
local prev = st

local function ret(code, v, st, reason, rtype, rtime, rdata, rsrc)
  return {code, tostring(v), st or '', reason or '', rtype or '', rtime or '', rdata or '', prev or '', rsrc or ''}
end
local function sagadata()
  local n = tonumber(cur[7] or '0')
  if n == 0 then return '' end
  local parts = {}
  for i = 1, math.min(n, 4) do parts[i] = cur[7 + i] end
  if n > 4 then
    local f = {}
    for i = 4, n - 1 do f[#f + 1] = 'd' .. i end
    local more = redis.call('HMGET', h, unpack(f))
    for i = 1, #more do parts[#parts + 1] = more[i] end
  end
  return table.concat(parts)
end
local function short(t)
  if string.sub(t, 1, 9) == 'io.ksaga.' then return '~' .. string.sub(t, 10) end
  return t
end
local function terminal(s)
  return s == 'completed' or s == 'compensated' or s == 'compensation_failed'
end

-- a redelivered event: its stored reply, and one more redelivery counted
local stored = cur[1]
if stored then
  local parts, start = {}, 1
  for i = 1, 6 do
    local j = string.find(stored, '\31', start, true)
    parts[i] = string.sub(stored, start, j - 1)
    start = j + 1
  end
  redis.call('HINCRBY', h, 'c' .. parts[1], 1)
  local data = string.sub(stored, start)
  if parts[5] == '=' then data = sagadata() end
  local reason = parts[4]
  if reason ~= '' then reason = redis.call('HGET', h, 'x' .. reason) or '' end
  local rtype = parts[2]
  if string.sub(rtype, 1, 1) == '~' then rtype = 'io.ksaga.' .. string.sub(rtype, 2) end
  local rtime = parts[3]
  if rtime ~= '' then rtime = tostring(tonumber(cur[5]) + tonumber(rtime)) end
  return ret('duplicate', parts[1], st, reason, rtype, rtime, data, parts[6])
end
if gone then return {'gone'} end
if pk and mode ~= 'commit' then
  local p = redis.call('HMGET', pk, 'n', 'd', 't', 'v', 'ks', 'at')
  if p[2] then
    local ttl = tostring(redis.call('PTTL', pk))
    if p[2] == a.dedupe and mode == 'prepare' then return {'pending', p[1], p[3], p[4], ttl, p[6] or '0'} end
    return {'busy', p[1], p[3], p[4], ttl, p[2], p[5]}
  end
end

local create = a.create == '1'
local fresh = create and not st
if create and st then
  -- a saga recorded accepted runs its start once
  if a.accept == '1' or st ~= 'accepted' then return ret('skipped:exists', v, st) end
end
if not fresh then
  if not st then return ret('skipped:unknown saga', 0, '') end
  if cur[12] ~= a.saga then return ret('skipped:saga', v, st) end
  if tonumber(a.version) ~= v then return ret('skipped:version', v, st) end
  if not string.find(a.allow, ',' .. st .. ',', 1, true) then return ret('skipped:status', v, st) end
end
local cp = cur[6] or ''
local spop = a['s.pop']
if spop ~= '' and string.match(cp, '^[^,]*') ~= spop then return ret('skipped:stack', v, st) end

if mode == 'prepare' then
  local n = redis.call('HGET', pk, 'n') or '0'
  local ttl
  if fresh then
    ttl = tonumber(a.deadline) - now + tonumber(a.retention) * 1000
  else
    ttl = redis.call('PTTL', h)
  end
  local stored = {}
  for i = 1, #ARGV, 2 do
    if ARGV[i] ~= 'a.mode' then
      stored[#stored + 1] = ARGV[i]
      stored[#stored + 1] = ARGV[i + 1]
    end
  end
  -- at: when it was prepared, by this node's clock (its effect may run
  -- until a.late ms later)
  local t = redis.call('TIME')
  local at = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', pk, 'n', n, 'd', a.dedupe, 't', a.btag, 'v', v, 'ks', table.concat(KEYS, '\0'),
    'av', cmsgpack.pack(stored), 'at', at)
  if ttl > 0 then redis.call('PEXPIRE', pk, ttl) end
  redis.call('ZADD', k.pendings, now, a.id)
  return {'prepared', n, a.btag, tostring(v), tostring(ttl), at}
end

local code, m, freason = 'applied', 's.', nil
local res
if mode == 'commit' then
  if a.eres ~= '+' then res = string.sub(a.eres, 2) end
else
  res = effect(ek, ea)
end
if res ~= nil and res ~= true then
  freason = tostring(res)
elseif a.fail == '1' then
  freason = ''
end
if freason then
  if a.hasf ~= '1' then
    if mode == 'commit' then -- dropped: the next attempt runs the effect again
      redis.call('HDEL', pk, 'd', 't', 'v', 'ks', 'av', 'at')
      redis.call('HINCRBY', pk, 'n', 1)
      redis.call('ZREM', k.pendings, a.id)
    end
    return redis.error_reply('ksaga: effect failed and the change has no failure outcome: ' .. freason)
  end
  code, m = 'failed', 'f.'
end
if mode == 'commit' then
  redis.call('HDEL', pk, 'n', 'd', 't', 'v', 'ks', 'av', 'at') -- (DEL is not every function's to run)
  redis.call('ZREM', k.pendings, a.id)
end

local function arg(name) return a[m .. name] end
local outcome, nst, reason = arg('outcome'), arg('status'), arg('reason')
if freason and freason ~= '' then reason = freason end
local step = a.step

v = v + 1
local ca, n = now, 0
local f = {}
if fresh then
  local d = a.data
  local chunks, size = math.ceil(#d / 60), 60
  if chunks > 64 then chunks, size = 1, #d end
  f = {'ca', now, 'dl', a.deadline, 'dc', chunks, 'sg', a.saga}
  for i = 0, chunks - 1 do
    f[#f + 1] = 'd' .. i
    f[#f + 1] = string.sub(d, i * size + 1, (i + 1) * size)
  end
  if a.key ~= '' then
    f[#f + 1] = 'k'
    f[#f + 1] = a.key
  end
  if a.trace ~= '' then
    f[#f + 1] = 'tr'
    f[#f + 1] = a.trace
  end
else
  ca, n = tonumber(cur[5]), tonumber(cur[4] or '0')
  if create then -- the start of an accepted saga records the data it runs with, and its trace
    local d = a.data
    local old = tonumber(cur[7] or '0')
    local chunks, size = math.ceil(#d / 60), 60
    if chunks > 64 then chunks, size = 1, #d end
    f = {'dc', chunks}
    if a.trace ~= '' then f[#f + 1] = 'tr' f[#f + 1] = a.trace end
    for i = 0, chunks - 1 do
      f[#f + 1] = 'd' .. i
      f[#f + 1] = string.sub(d, i * size + 1, (i + 1) * size)
    end
    for i = chunks, old - 1 do redis.call('HDEL', h, 'd' .. i) end
    if a.trace ~= '' then f[#f + 1] = 'tr' f[#f + 1] = a.trace end
  end
end
if fresh and a.accept == '1' then
  st = 'accepted'
elseif fresh then
  st = 'running'
end
if nst ~= '' then st = nst end
local at = tostring(now - ca)
local function put(field, value)
  f[#f + 1] = field
  f[#f + 1] = value
end
put('st', st)
put('v', v)
put('ua', now)
local flags = ''
if reason ~= '' then
  flags = 'r'
  put('x' .. v, reason)
  put('rs', reason)
  if arg('fstep') ~= '' then put('fs', arg('fstep')) elseif step ~= '' then put('fs', step) end
end
if step ~= '' then
  n = n + 1
  put('n', n)
  put('l' .. n, at .. '|' .. step .. '|' .. outcome .. '|' .. short(a.etype) .. '|' .. v .. '|' .. flags)
  put('e' .. n, a.eid .. '\31' .. a.esrc)
  if a.actor ~= '' then put('a' .. n, a.actor) end
  put('sp', step)
elseif fresh then
  put('n', 0)
end
-- the compensation stack
local pop, push = arg('pop'), arg('push') == '1'
if pop ~= '' or push or arg('clear') == '1' then
  if arg('clear') == '1' then
    cp = ''
  elseif pop ~= '' then
    local j = string.find(cp, ',', 1, true)
    if j then cp = string.sub(cp, j + 1) else cp = '' end
  end
  if push and not string.find(',' .. cp .. ',', ',' .. step .. ',', 1, true) then
    if cp == '' then cp = step else cp = step .. ',' .. cp end
  end
  put('cp', cp)
end
if arg('output') ~= '' then put('o.' .. step, arg('output')) end
-- the reply, stored for redeliveries, and awaited by the saga
local rtype, rsrc, own = arg('type'), arg('source'), arg('own') == '1'
local rdata = arg('data')
local rtime, roff, flag, kept = '', '', 'd', rdata
if rtype ~= '' then rtime, roff = tostring(now), at end
if own then
  flag, kept = '=', ''
  if fresh or create then rdata = a.data else rdata = sagadata() end
end
local rref = ''
if reason ~= '' then rref = tostring(v) end
put(a.dedupe, v .. '\31' .. short(rtype) .. '\31' .. roff .. '\31' .. rref .. '\31' .. flag .. '\31' .. rsrc .. '\31' .. kept)
if rtype ~= '' then
  put('nx', a.dedupe .. '\31' .. arg('rid'))
else
  redis.call('HDEL', h, 'nx')
end
local due = tonumber(arg('due')) or 0
if terminal(st) then due = 0 end
if due > 0 or terminal(st) then put('du', due) end
redis.call('HSET', h, unpack(f))

-- indexes
local id = a.id
if prev ~= st then
  if prev then redis.call('ZREM', k['s.' .. prev], id) end
  local score = ca
  if terminal(st) then score = now end
  redis.call('ZADD', k['s.' .. st], score, id)
end
if due > 0 then
  redis.call('ZADD', k.due, due, id)
elseif terminal(st) then
  redis.call('ZREM', k.due, id)
end
local retention = tonumber(a.retention)
-- the business key follows the saga that holds it: a newer saga with the
-- same key has taken it over, and this one's end must not expire it
local function ownkey() return k.key and redis.call('GET', k.key) == id end
if fresh then
  redis.call('ZADD', k.created, now, id)
  redis.call('SADD', k.defs, a.saga)
  local ttl = math.floor((tonumber(a.deadline) - now) / 1000) + retention
  if ttl < 1 then ttl = 1 end
  redis.call('EXPIRE', h, ttl)
  if k.key then redis.call('SET', k.key, id, 'EX', ttl) end
end
if terminal(st) and not terminal(prev) then
  redis.call('EXPIRE', h, retention)
  if ownkey() then redis.call('EXPIRE', k.key, retention) end
  redis.call('LPUSH', k.stats, now .. ':' .. (now - ca) .. ':' .. st)
  redis.call('LTRIM', k.stats, 0, tonumber(a.recent) - 1)
elseif prev and terminal(prev) and not terminal(st) then
  -- unfinished again (a redriven compensation): kept until the retention
  -- after its deadline, or after now if that is past
  local score = math.max(tonumber(cur[13] or '0'), now)
  local ttl = math.floor((score - now) / 1000) + retention
  redis.call('EXPIRE', h, ttl)
  if ownkey() then redis.call('EXPIRE', k.key, ttl) end
end
-- a dead letter recorded with the change
if a['dl.id'] == '1' then
  if redis.call('SET', k.dlkept, '1', 'NX', 'EX', a['dl.keep']) then
    redis.call('XADD', k.dl, 'MAXLEN', '~', a['dl.max'], '*', 'saga_id', id, 'type', a.etype, 'id', a.eid,
      'source', a.esrc, 'dest', a['dl.dest'], 'code', a['dl.code'], 'body', a['dl.body'], 'reason', a['dl.reason'],
      'handling', a['dl.handling'], 'event', a['dl.event'])
  end
end
return ret(code, v, st, reason, rtype, rtime, rdata, rsrc)
`

// noteLua appends an annotation to a saga's history without moving it.
// keys: the saga hash; args: now (ms), step, outcome, event type, event
// id, event source, actor, reason.
const noteLua = `
local h = KEYS[1]
local cur = redis.call('HMGET', h, 'v', 'n', 'ca')
if not cur[1] then return 0 end
local n = tonumber(cur[2] or '0') + 1
local t = ARGV[4]
if string.sub(t, 1, 9) == 'io.ksaga.' then t = '~' .. string.sub(t, 10) end
local flags = 'n'
local f = {'n', n, 'l' .. n, (tonumber(ARGV[1]) - tonumber(cur[3])) .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. t .. '|' .. cur[1] .. '|' .. flags,
  'e' .. n, ARGV[5] .. '\31' .. ARGV[6]}
if ARGV[7] ~= '' then f[#f + 1] = 'a' .. n f[#f + 1] = ARGV[7] end
if ARGV[8] ~= '' then f[#f + 1] = 'y' .. n f[#f + 1] = ARGV[8] end
redis.call('HSET', h, unpack(f))
return 1
`

// rescheduleLua sets when the deadline sweeper looks at an unfinished
// saga next, if it is still at the version read. keys: the saga hash, its
// definition's due index; args: version, due (ms), saga id.
const rescheduleLua = `
local cur = redis.call('HMGET', KEYS[1], 'v', 'st')
if cur[1] ~= ARGV[1] then return 0 end
if cur[2] == 'completed' or cur[2] == 'compensated' or cur[2] == 'compensation_failed' then return 0 end
redis.call('HSET', KEYS[1], 'du', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
`

// keepDeadLetterLua records a dead letter once. keys: stream, marker;
// args: marker TTL (s), max stream length, then field/value pairs.
const keepDeadLetterLua = `
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local f = {}
for i = 3, #ARGV do f[#f + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(f))
return 1
`

// effectLua runs a change's effect on the node of its keys, when they are
// not in the saga's slot (Redis Cluster; see cluster.go), with the
// attempt's barrier: KEYS[1] is the barrier, then the effect's keys;
// ARGV are name/value pairs as for transitionLua: a.ttl (ms, the
// barrier's), a.notafter (unix ms: the attempt's effect may not run
// later; 0 any time), and the effect's K/A pairs. The barrier holds the
// effect's result once it has run ("+", or "-" and the failure reason),
// or "x" once the attempt was resolved without it: either way the effect
// never runs (again) for this attempt. It returns the barrier, or "late"
// (nothing written) past notafter.
const effectLua = `
local function effect(keys, args)
--EFFECT--
end
local a, ek, ea = {}, {}, {}
do
  local t = {a = a, K = ek, A = ea}
  for i = 1, #ARGV, 2 do
    local name, val = ARGV[i], ARGV[i + 1]
    local kind = string.sub(name, 1, 1)
    local tbl, key = t[kind], string.sub(name, 3)
    if kind == 'K' then val = KEYS[tonumber(val)] end
    if string.sub(key, -2) == '[]' then
      key = string.sub(key, 1, -3)
      local l = tbl[key]
      if not l then l = {} tbl[key] = l end
      l[#l + 1] = val
    else
      tbl[key] = val
    end
  end
end
local b = redis.call('GET', KEYS[1])
if b then return b end
local notafter = tonumber(a.notafter)
if notafter > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > notafter then return 'late' end
end
local res = effect(ek, ea)
local r = '+'
if res ~= nil and res ~= true then r = '-' .. tostring(res) end
redis.call('SET', KEYS[1], r, 'PX', a.ttl)
return r
`

// resolveLua settles an attempt whose change was left pending: the
// effect's result if it ran, else "x", stored so that it never runs.
// KEYS[1] is the barrier; ARGV[1] its TTL (ms).
const resolveLua = `
local b = redis.call('GET', KEYS[1])
if b then return b end
redis.call('SET', KEYS[1], 'x', 'PX', ARGV[1])
return 'x'
`

func transitionScript(effectLua string) string {
	return strings.Replace(transitionLua, "--EFFECT--", effectLua, 1)
}

func effectScript(body string) string {
	return strings.Replace(effectLua, "--EFFECT--", body, 1)
}
