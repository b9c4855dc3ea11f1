package redisstore

import "strings"

// transitionLua is the one atomic operation of a step. A store builds one
// script per registered effect by inserting the effect's body; all scripts
// share this layout.
//
// KEYS[1] the saga hash; KEYS[2] the active-saga index (a sorted set scored
// by deadline; KEYS[1] again when the index is off); KEYS[3..] the effect's
// keys.
// ARGV: 1 dedupe field, 2 now (unix ms), 3 create (1/0), 4 expected version
// (0 = any), 5 allowed statuses (",a,b,"), 6 step, 7 data (create),
// 8 deadline (unix ms, create), 9 retention (s), 10 event type,
// 11 number of effect args, 12 saga id, 13 index on (1/0); 14-21 the success
// outcome and 22 (failure present 1/0) + 23-30 the failure outcome, each as:
// outcome, status, reason, compensable (1/0), compensates, reply type, reply
// data, reply uses the saga's data (1/0); 31.. the effect's args.
// It returns {code, version, status, reason, reply type, reply time, reply
// data, status before}.
//
// Saga hash fields: st status, v version, sp step, ca/ua created/updated (ms),
// dl deadline (ms), dc + d0..d<dc-1> the data in chunks, rs reason, fs failed
// step, cp compensation stack ("a,b", next first), n history length, l<i>
// history entries ("at|step|outcome|type|reason"), x<v> the reason given at
// version v (history entries and replies refer to it as "#<v>"), r<key>
// stored replies ("version\31type\31time\31reason\31flag\31data"; flag "="
// means the saga's data).
//
// Compactness: a finished saga should cost well under 1 KiB. Redis keeps a
// small hash as one listpack only while every value is at most
// hash-max-listpack-value (64 bytes by default), so the data is stored in
// 60-byte chunks, up to 64 of them (a listpack holds 128 fields: room is
// left for the history); larger data is one field, since thousands of
// chunks would overflow Lua's unpack limit. Times inside history entries and
// replies are offsets (ms) from ca; event types drop the "io.ksaga." prefix
// ("~").
const transitionLua = `
local function effect(keys, args)
--EFFECT--
end

local h = KEYS[1]
local now = ARGV[2]
-- everything a transition reads, in one call
local cur = redis.call('HMGET', h, ARGV[1], 'st', 'v', 'n', 'ca', 'cp', 'dc', 'd0', 'd1', 'd2', 'd3')
local st, v = cur[2], tonumber(cur[3] or '0')
local prev = st

local function ret(code, v, st, reason, rtype, rtime, rdata)
  return {code, tostring(v), st or '', reason or '', rtype or '', rtime or '', rdata or '', prev or ''}
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
-- onstack reports whether the compensation stack list ("a,b") holds name
local function onstack(list, name)
  return string.find(',' .. list .. ',', ',' .. name .. ',', 1, true) ~= nil
end
local function short(t)
  if string.sub(t, 1, 9) == 'io.ksaga.' then return '~' .. string.sub(t, 10) end
  return t
end

local stored = cur[1]
if stored then
  local parts, start = {}, 1
  for i = 1, 5 do
    local j = string.find(stored, '\31', start, true)
    parts[i] = string.sub(stored, start, j - 1)
    start = j + 1
  end
  local data = string.sub(stored, start)
  if parts[5] == '=' then data = sagadata() end
  local reason = parts[4]
  if string.sub(reason, 1, 1) == '#' then reason = redis.call('HGET', h, 'x' .. string.sub(reason, 2)) or '' end
  local rtype = parts[2]
  if string.sub(rtype, 1, 1) == '~' then rtype = 'io.ksaga.' .. string.sub(rtype, 2) end
  local rtime = parts[3]
  if rtime ~= '' then rtime = tostring(tonumber(cur[5]) + tonumber(rtime)) end
  return ret('duplicate', parts[1], st, reason, rtype, rtime, data)
end

if ARGV[3] == '1' then
  if st then return ret('skipped:exists', v, st) end
else
  if not st then return ret('skipped:unknown saga', 0, '') end
  if ARGV[4] ~= '0' and tonumber(ARGV[4]) ~= v then return ret('skipped:version', v, st) end
  if not string.find(ARGV[5], ',' .. st .. ',', 1, true) then return ret('skipped:status', v, st) end
end

local ekeys, eargs = {}, {}
for i = 3, #KEYS do ekeys[#ekeys + 1] = KEYS[i] end
for i = 1, tonumber(ARGV[11]) do eargs[i] = ARGV[30 + i] end
local code, o, freason = 'applied', 14, nil
-- a compensation of a step that is not on the stack has nothing to undo
-- (the step never applied, or was undone already): its effect is not run
local res = nil
local undoes = ARGV[18]
if undoes == '' or onstack(cur[6] or '', undoes) then
  res = effect(ekeys, eargs)
end
if res ~= nil and res ~= true then
  if ARGV[22] ~= '1' then
    return redis.error_reply('ksaga: effect failed and the transition has no failure outcome: ' .. tostring(res))
  end
  code, o, freason = 'failed', 23, tostring(res)
end

local outcome, nst, reason = ARGV[o], ARGV[o + 1], ARGV[o + 2]
if freason then reason = freason end
local compensable, compensates = ARGV[o + 3], ARGV[o + 4]
local rtype, rdata, usesaga = ARGV[o + 5], ARGV[o + 6], ARGV[o + 7]
local step = ARGV[6]
local create = ARGV[3] == '1'

v = v + 1
local ca, n, cp = now, 0, ''
local f = {}
if create then
  st = 'running'
  local d = ARGV[7]
  local chunks, size = math.ceil(#d / 60), 60
  if chunks > 64 then chunks, size = 1, #d end
  f = {'ca', now, 'dl', ARGV[8], 'dc', chunks}
  for i = 0, chunks - 1 do
    f[#f + 1] = 'd' .. i
    f[#f + 1] = string.sub(d, i * size + 1, (i + 1) * size)
  end
  if usesaga == '1' then rdata = d end
else
  ca, n, cp = cur[5], tonumber(cur[4] or '0'), cur[6] or ''
  if usesaga == '1' then rdata = sagadata() end
end
if nst ~= '' then st = nst end
local at = tostring(tonumber(now) - tonumber(ca))
f[#f + 1] = 'st'
f[#f + 1] = st
f[#f + 1] = 'v'
f[#f + 1] = v
f[#f + 1] = 'ua'
f[#f + 1] = now
local rref = ''
if reason ~= '' then
  rref = '#' .. v
  f[#f + 1] = 'x' .. v
  f[#f + 1] = reason
  f[#f + 1] = 'rs'
  f[#f + 1] = reason
  if step ~= '' then
    f[#f + 1] = 'fs'
    f[#f + 1] = step
  end
end
if step ~= '' then
  n = n + 1
  f[#f + 1] = 'n'
  f[#f + 1] = n
  f[#f + 1] = 'l' .. n
  f[#f + 1] = at .. '|' .. step .. '|' .. outcome .. '|' .. short(ARGV[10]) .. '|' .. rref
  f[#f + 1] = 'sp'
  f[#f + 1] = step
elseif create then
  f[#f + 1] = 'n'
  f[#f + 1] = 0
end
if compensable == '1' or compensates ~= '' then
  if compensates ~= '' then
    local list, removed = {}, false
    for name in string.gmatch(cp, '[^,]+') do
      if name == compensates and not removed then removed = true else list[#list + 1] = name end
    end
    cp = table.concat(list, ',')
  end
  -- a step is on the stack once: a second application of its forward
  -- transition (another event for it) made no second change to undo
  if compensable == '1' and not onstack(cp, step) then
    if cp == '' then cp = step else cp = step .. ',' .. cp end
  end
  f[#f + 1] = 'cp'
  f[#f + 1] = cp
end
local rtime, roff, flag, kept = '', '', 'd', rdata
if rtype ~= '' then rtime, roff = now, at end
if usesaga == '1' then flag, kept = '=', '' end
f[#f + 1] = ARGV[1]
f[#f + 1] = v .. '\31' .. short(rtype) .. '\31' .. roff .. '\31' .. rref .. '\31' .. flag .. '\31' .. kept
redis.call('HSET', h, unpack(f))

if st == 'completed' or st == 'compensated' or st == 'compensation_failed' then
  redis.call('EXPIRE', h, ARGV[9])
  if ARGV[13] == '1' then redis.call('ZREM', KEYS[2], ARGV[12]) end
elseif create then
  local ttl = math.floor((tonumber(ARGV[8]) - tonumber(now)) / 1000) + tonumber(ARGV[9])
  if ttl < 1 then ttl = 1 end
  redis.call('EXPIRE', h, ttl)
  if ARGV[13] == '1' then redis.call('ZADD', KEYS[2], ARGV[8], ARGV[12]) end
elseif prev == 'completed' or prev == 'compensated' or prev == 'compensation_failed' then
  -- unfinished again (a redriven compensation): indexed by its deadline,
  -- or now if that is past (older entries are pruned as expired), and kept
  -- until the retention after that, as a new saga is
  local score = math.max(tonumber(redis.call('HGET', h, 'dl') or '0'), tonumber(now))
  redis.call('EXPIRE', h, math.floor((score - tonumber(now)) / 1000) + tonumber(ARGV[9]))
  if ARGV[13] == '1' then redis.call('ZADD', KEYS[2], score, ARGV[12]) end
end
return ret(code, v, st, reason, rtype, rtime, rdata)
`

func transitionScript(effectLua string) string {
	return strings.Replace(transitionLua, "--EFFECT--", effectLua, 1)
}
