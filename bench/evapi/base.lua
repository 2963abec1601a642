-- Benchmark script, mode "base": Kamailio's MODE_BASE in
-- bench/kamailio/kamailio.cfg. Every request gets a stateless 200 OK.
function ksr_request_route()
    KSR.sl.sl_send_reply(200, "OK")
end

-- the [evapi] event_callback must exist; clients here only read
function ksr_evapi_event(evname)
end
