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
// 60-byte chunks; times inside history entries and replies are offsets (ms)
// from ca; event types drop the "io.ksaga." prefix ("~").
const transitionLua = `
local function effect(keys, args)
--EFFECT--
end

local h = KEYS[1]
local now = ARGV[2]
local function ret(code, v, st, reason, rtype, rtime, rdata, prev)
  return {code, tostring(v), st or '', reason or '', rtype or '', rtime or '', rdata or '', prev or ''}
end
local function short(t)
  if string.sub(t, 1, 9) == 'io.ksaga.' then return '~' .. string.sub(t, 10) end
  return t
end
local function long(t)
  if string.sub(t, 1, 1) == '~' then return 'io.ksaga.' .. string.sub(t, 2) end
  return t
end
local function sagadata()
  local n = tonumber(redis.call('HGET', h, 'dc') or '0')
  if n == 0 then return '' end
  local f = {}
  for i = 0, n - 1 do f[#f + 1] = 'd' .. i end
  return table.concat(redis.call('HMGET', h, unpack(f)))
end
local function why(ref)
  if string.sub(ref, 1, 1) == '#' then return redis.call('HGET', h, 'x' .. string.sub(ref, 2)) or '' end
  return ref
end
local function abs(offset)
  if offset == '' then return '' end
  return tostring(tonumber(redis.call('HGET', h, 'ca')) + tonumber(offset))
end

local stored = redis.call('HGET', h, ARGV[1])
if stored then
  local parts, start = {}, 1
  for i = 1, 5 do
    local j = string.find(stored, '\31', start, true)
    parts[i] = string.sub(stored, start, j - 1)
    start = j + 1
  end
  local data = string.sub(stored, start)
  if parts[5] == '=' then data = sagadata() end
  local now_st = redis.call('HGET', h, 'st')
  return ret('duplicate', parts[1], now_st, why(parts[4]), long(parts[2]), abs(parts[3]), data, now_st)
end

local cur = redis.call('HMGET', h, 'st', 'v')
local st, v = cur[1], tonumber(cur[2] or '0')
local prev = st
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
local res = effect(ekeys, eargs)
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

v = v + 1
local ca = now
if ARGV[3] == '1' then
  st = 'running'
  local d, f = ARGV[7], {'ca', now, 'dl', ARGV[8], 'n', 0}
  local chunks = math.ceil(#d / 60)
  f[#f + 1] = 'dc'
  f[#f + 1] = chunks
  for i = 0, chunks - 1 do
    f[#f + 1] = 'd' .. i
    f[#f + 1] = string.sub(d, i * 60 + 1, (i + 1) * 60)
  end
  redis.call('HSET', h, unpack(f))
else
  ca = redis.call('HGET', h, 'ca')
end
local at = tostring(tonumber(now) - tonumber(ca))
if nst ~= '' then st = nst end
local f = {'st', st, 'v', v, 'ua', now}
local rref = ''
if reason ~= '' then
  rref = '#' .. v
  f[#f + 1] = 'x' .. v
  f[#f + 1] = reason
end
if step ~= '' then
  local n = redis.call('HINCRBY', h, 'n', 1)
  f[#f + 1] = 'l' .. n
  f[#f + 1] = at .. '|' .. step .. '|' .. outcome .. '|' .. short(ARGV[10]) .. '|' .. rref
  f[#f + 1] = 'sp'
  f[#f + 1] = step
end
if reason ~= '' then
  f[#f + 1] = 'rs'
  f[#f + 1] = reason
  if step ~= '' then
    f[#f + 1] = 'fs'
    f[#f + 1] = step
  end
end
if compensable == '1' or compensates ~= '' then
  local cp = redis.call('HGET', h, 'cp') or ''
  if compensates ~= '' then
    local list, removed = {}, false
    for name in string.gmatch(cp, '[^,]+') do
      if name == compensates and not removed then removed = true else list[#list + 1] = name end
    end
    cp = table.concat(list, ',')
  end
  if compensable == '1' then
    if cp == '' then cp = step else cp = step .. ',' .. cp end
  end
  f[#f + 1] = 'cp'
  f[#f + 1] = cp
end
redis.call('HSET', h, unpack(f))

local rtime = ''
if rtype ~= '' then rtime = now end
local flag, kept = 'd', rdata
if usesaga == '1' then flag, kept = '=', '' end
local roff = ''
if rtype ~= '' then roff = at end
redis.call('HSET', h, ARGV[1], v .. '\31' .. short(rtype) .. '\31' .. roff .. '\31' .. rref .. '\31' .. flag .. '\31' .. kept)

if st == 'completed' or st == 'compensated' or st == 'compensation_failed' then
  redis.call('EXPIRE', h, ARGV[9])
  if ARGV[13] == '1' then redis.call('ZREM', KEYS[2], ARGV[12]) end
elseif ARGV[3] == '1' then
  local ttl = math.floor((tonumber(ARGV[8]) - tonumber(now)) / 1000) + tonumber(ARGV[9])
  if ttl < 1 then ttl = 1 end
  redis.call('EXPIRE', h, ttl)
  if ARGV[13] == '1' then redis.call('ZADD', KEYS[2], ARGV[8], ARGV[12]) end
end

local data = rdata
if usesaga == '1' then data = sagadata() end
return ret(code, v, st, reason, rtype, rtime, data, prev)
`

func transitionScript(effectLua string) string {
	return strings.Replace(transitionLua, "--EFFECT--", effectLua, 1)
}
