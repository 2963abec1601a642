-- Benchmark script, mode "relay": Kamailio's MODE_RELAY in
-- bench/kamailio/kamailio.cfg. Every request is relayed to all event
-- clients as the same ~240-byte JSON (same fields, same order, same
-- quoting as the cfg's evapi_relay template), then answered 200 statelessly.
local get = KSR.pv.get
function ksr_request_route()
    KSR.evapi.relay('{"event":"options","ci":"' .. get("$ci")
        .. '","method":"' .. get("$rm")
        .. '","ruri":"' .. get("$ru")
        .. '","from":"' .. get("$fu")
        .. '","to":"' .. get("$tu")
        .. '","src":"' .. get("$si") .. ':' .. get("$sp")
        .. '","cseq":"' .. get("$cs")
        .. '","pad":"0123456789abcdef0123456789"}')
    KSR.sl.sl_send_reply(200, "OK")
end

-- the [evapi] event_callback must exist; clients here only read
function ksr_evapi_event(evname)
end
