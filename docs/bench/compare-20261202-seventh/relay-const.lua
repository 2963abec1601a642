local get = KSR.pv.get
function ksr_request_route()
    KSR.evapi.relay('{"event":"options","ci":"' .. "0123456789abcdef0123456789ab@127.0.0.1"
        .. '","method":"' .. "OPTIONS"
        .. '","ruri":"' .. "sip:service@127.0.0.1:15060"
        .. '","from":"' .. "sip:sipp@127.0.0.1:15070"
        .. '","to":"' .. "sip:service@127.0.0.1:15060"
        .. '","src":"' .. "127.0.0.1" .. ':' .. "15070"
        .. '","cseq":"' .. "1"
        .. '","pad":"0123456789abcdef0123456789"}')
    KSR.sl.sl_send_reply(200, "OK")
end
function ksr_evapi_event(evname)
end
