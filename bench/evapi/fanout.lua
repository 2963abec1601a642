-- Benchmark script, mode "fanout": Kamailio's MODE_FANOUT in
-- bench/kamailio/kamailio.cfg. One request with "X-Count: N" makes its
-- worker relay N ~210-byte frames to every event client in a loop (the
-- event socket alone: no SIP per frame), then answer 200.
local pad = string.rep("0123456789abcdef", 10) .. "0123456789ab"
function ksr_request_route()
    local n = tonumber(KSR.hdr.get("X-Count")) or 0
    local relay = KSR.evapi.relay
    for i = 0, n - 1 do
        relay('{"event":"fanout","ci":"' .. i .. '","pad":"' .. pad .. '"}')
    end
    KSR.sl.sl_send_reply(200, "OK")
end

-- the [evapi] event_callback must exist; clients here only read
function ksr_evapi_event(evname)
end
