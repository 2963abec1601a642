-- A CGRateS-style authorisation flow, ported from the usual Kamailio
-- evapi configuration of CGRateS (its "kamevapi" agent) to KEMI Lua.
--
-- Each INVITE is suspended and a CGR_AUTH_REQUEST goes to the rating engine
-- on the event socket, with the transaction's index and label as strings
-- (tr_index, tr_label), as CGRateS expects. CGRateS answers with a
-- CGR_AUTH_REPLY carrying the same tr_index/tr_label and either an error
-- or the maximum call duration (max_usage, seconds). The call is then
-- relayed (with the allowed duration in an X-Max-Usage header) or refused.

local cjson = require("cjson")

function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        KSR.x.exit()
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
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        KSR.x.exit()
    end
    if KSR.evapi.client_count() == 0 then
        KSR.sl.sl_send_reply(503, "Rating Engine Unavailable")
        KSR.x.exit()
    end
    KSR.tm.t_newtran()
    local request = '{"event":"CGR_AUTH_REQUEST",'
        .. '"tr_index":"' .. KSR.pv.get("$T(id_index)") .. '",'
        .. '"tr_label":"' .. KSR.pv.get("$T(id_label)") .. '",'
        .. '"cgr_reqtype":"*prepaid",'
        .. '"cgr_account":"' .. KSR.pv.get("$fU") .. '",'
        .. '"cgr_destination":"' .. KSR.pv.get("$rU") .. '",'
        .. '"cgr_setuptime":"' .. os.time() .. '"}'
    if KSR.evapi.async_relay(request) < 0 then
        KSR.tm.t_reply(500, "Rating Request Failed")
    end
end

function ksr_cgr_event(evname)
    if evname ~= "evapi:message-received" then
        return
    end
    local msg = KSR.pv.get("$evapi(msg)")
    -- The native config reads fields with jansson; so does this port.
    if KSR.jansson.get("event", msg, "$var(cgr_event)") < 0 then
        KSR.warn("rating engine message without event: " .. msg)
        return
    end
    if KSR.pv.get("$var(cgr_event)") ~= "CGR_AUTH_REPLY" then
        return
    end
    KSR.jansson.get("tr_index", msg, "$var(tr_index)")
    KSR.jansson.get("tr_label", msg, "$var(tr_label)")
    KSR.pv.sets("$var(cgr_error)", "")
    KSR.jansson.get("error", msg, "$var(cgr_error)")
    KSR.pv.seti("$var(max_usage)", -1)
    KSR.jansson.get("max_usage", msg, "$var(max_usage)")
    KSR.pv.sets("$var(dst)", "")
    KSR.jansson.get("dst", msg, "$var(dst)")
    KSR.tmx.t_continue(KSR.pv.get("$var(tr_index)"), KSR.pv.get("$var(tr_label)"), "ksr_cgr_auth_reply")
end

function ksr_cgr_auth_reply()
    local err = KSR.pv.get("$var(cgr_error)")
    if err ~= nil and err ~= "" then
        KSR.tm.t_reply(403, "CGR_ERROR " .. err)
        KSR.x.exit()
    end
    local max_usage = tonumber(KSR.pv.get("$var(max_usage)")) or -1
    if max_usage == 0 then
        KSR.tm.t_reply(403, "Insufficient Credit")
        KSR.x.exit()
    end
    if max_usage > 0 then
        KSR.hdr.append("X-Max-Usage: " .. max_usage .. "\r\n")
    end
    local dst = KSR.pv.get("$var(dst)")
    if dst ~= "" then
        KSR.pv.sets("$du", dst)
    end
    KSR.rr.record_route()
    if KSR.tm.t_relay() < 0 then
        KSR.tm.t_reply(500, "Relay Failed")
    end
end
