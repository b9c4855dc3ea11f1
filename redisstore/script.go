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
// dl deadline (ms), d data, rs reason, fs failed step, cp compensation stack
// ("a,b", next first), n history length, l<i> history entries
// ("at|step|outcome|type|reason"), r:<key> stored replies
// ("version\31type\31time\31reason\31flag\31data"; flag "=" means the saga's
// data).
const transitionLua = `
local function effect(keys, args)
--EFFECT--
end

local h = KEYS[1]
local now = ARGV[2]
local function ret(code, v, st, reason, rtype, rtime, rdata, prev)
  return {code, tostring(v), st or '', reason or '', rtype or '', rtime or '', rdata or '', prev or ''}
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
  if parts[5] == '=' then data = redis.call('HGET', h, 'd') or '' end
  local now_st = redis.call('HGET', h, 'st')
  return ret('duplicate', parts[1], now_st, parts[4], parts[2], parts[3], data, now_st)
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
if ARGV[3] == '1' then
  st = 'running'
  redis.call('HSET', h, 'ca', now, 'd', ARGV[7], 'dl', ARGV[8], 'n', 0)
end
if nst ~= '' then st = nst end
local f = {'st', st, 'v', v, 'ua', now}
if step ~= '' then
  local n = redis.call('HINCRBY', h, 'n', 1)
  f[#f + 1] = 'l' .. n
  f[#f + 1] = now .. '|' .. step .. '|' .. outcome .. '|' .. ARGV[10] .. '|' .. reason
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
redis.call('HSET', h, ARGV[1], v .. '\31' .. rtype .. '\31' .. rtime .. '\31' .. reason .. '\31' .. flag .. '\31' .. kept)

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
if usesaga == '1' then data = redis.call('HGET', h, 'd') or '' end
return ret(code, v, st, reason, rtype, rtime, data, prev)
`

func transitionScript(effectLua string) string {
	return strings.Replace(transitionLua, "--EFFECT--", effectLua, 1)
}
