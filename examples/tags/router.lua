-- Tag-based routing: event clients say which calls they want.
--
-- A client tags itself on connecting by sending {"subscribe":"<tag>"}; the
-- tag is a destination domain (the host part of the Request-URI). INVITEs
-- to that domain are offered to ONE client of the tag (round robin, so the
-- load spreads), suspended until it answers; every client of the tag
-- "monitor" gets a copy of each call event (multicast). Clients that have
-- not subscribed are tagged "idle" in connection-new, so they get nothing
-- until they choose.
--
-- Answer as for the default script: {"tindex":..,"tlabel":..,"code":..,"reason":..}
-- or {"tindex":..,"tlabel":..,"dst":"sip:host:port"}.

local cjson = require("cjson")

function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.send_reply(483, "Too Many Hops")
        return
    end
    -- Requests inside a call (ACK, BYE, re-INVITE) follow the route
    -- recorded when it was relayed (Record-Route), through us.
    if KSR.siputils.has_totag() > 0 then
        if KSR.rr.loose_route() > 0 then
            if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
        elseif not KSR.is_ACK() then
            KSR.sl.send_reply(404, "Not Here")
        end
        return
    end
    if not KSR.is_INVITE() then
        KSR.sl.send_reply(405, "Method Not Allowed")
        return
    end
    local domain = KSR.pv.get("$rd")
    -- No client for this domain: do not suspend the call at all.
    if KSR.evapi.client_count(domain) == 0 then
        KSR.sl.send_reply(480, "Nobody Serves " .. domain)
        return
    end
    KSR.tm.t_newtran()
    local event = cjson.encode({
        event = "invite",
        tindex = KSR.pv.get("$T(id_index)"),
        tlabel = KSR.pv.get("$T(id_label)"),
        domain = domain,
        from = KSR.pv.get("$fu"),
        to = KSR.pv.get("$tu"),
        callid = KSR.pv.get("$ci"),
    })
    KSR.evapi.relay_multicast(event, "monitor")
    -- async_unicast_rr: our round-robin variant; async_unicast would
    -- always pick the first client of the tag, as in Kamailio.
    if KSR.evapi.async_unicast_rr(event, domain) < 0 then
        KSR.tm.t_reply(500, "Event Relay Failed")
    end
end

function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        KSR.evapi.set_tag("idle")
        return
    end
    if evname ~= "evapi:message-received" then
        return
    end
    local ok, m = pcall(cjson.decode, KSR.pv.get("$evapi(msg)"))
    if not ok or type(m) ~= "table" then
        KSR.warn("not JSON: " .. KSR.pv.get("$evapi(msg)"))
        return
    end
    if m.subscribe then
        if KSR.evapi.set_tag(m.subscribe) > 0 then
            KSR.info("event client " .. KSR.pv.get("$evapi(conidx)") .. " subscribed to " .. m.subscribe)
        end
        return
    end
    if m.tindex and m.tlabel then
        KSR.pv.seti("$var(code)", tonumber(m.code) or 0)
        KSR.pv.sets("$var(reason)", m.reason or "Decided")
        KSR.pv.sets("$var(dst)", m.dst or "")
        KSR.tmx.t_continue(m.tindex, m.tlabel, "ksr_tags_resume")
    end
end

function ksr_tags_resume()
    local dst = KSR.pv.get("$var(dst)")
    if dst ~= "" then
        KSR.rr.record_route()
        KSR.pv.sets("$du", dst)
        KSR.tm.t_relay()
        return
    end
    local code = KSR.pv.get("$var(code)")
    if code < 200 or code > 699 then code = 500 end
    KSR.tm.t_reply(code, KSR.pv.get("$var(reason)"))
end
