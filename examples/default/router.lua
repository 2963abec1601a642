-- The default routing script of `evapi run`: third-party call control.
--
-- Every INVITE is suspended and announced on the event socket as JSON:
--   {"event":"invite","tindex":12,"tlabel":3456,"callid":"...","from":"sip:...",
--    "to":"sip:...","ruri":"sip:...","src":"127.0.0.1:5061"}
-- An event client decides by sending back, on the same socket:
--   {"tindex":12,"tlabel":3456,"code":486,"reason":"Busy Here"}   -> that reply
--   {"tindex":12,"tlabel":3456,"dst":"sip:127.0.0.1:5080"}         -> relay the call there
--     (record-routed: its ACK, BYE and re-INVITEs come through us too)
-- With no event client connected, INVITEs get 503 at once instead of waiting.
-- With [nats] on (docs/scale-out.md), the events also go to NATS workers
-- (subject evapi.relay; a worker answers with msg.respond(...)), and when
-- nobody listens there either the call gets 503 within milliseconds
-- (evapi:no-responders).
-- A call nobody answers ends with 408 when [tm] fr_inv_timer runs out.

local cjson = require("cjson")

function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.send_reply(483, "Too Many Hops")
        return
    end
    -- Requests inside a call (ACK, BYE, re-INVITE...) follow the route
    -- recorded when the call was relayed (Record-Route), through us.
    if KSR.siputils.has_totag() > 0 then
        if KSR.rr.loose_route() > 0 then
            if KSR.tm.t_relay() < 0 then
                KSR.sl.sl_reply_error()
            end
        elseif not KSR.is_ACK() then
            KSR.sl.send_reply(404, "Not Here")
        end
        return
    end
    if KSR.is_OPTIONS() then
        KSR.sl.send_reply(200, "Keepalive")
        return
    end
    if KSR.is_ACK() then
        return -- a stray ACK: nothing to answer
    end
    if KSR.is_CANCEL() then
        -- A CANCEL of a call we hold never reaches the script: the
        -- transaction layer answers it. This one matches nothing.
        KSR.sl.send_reply(481, "Call/Transaction Does Not Exist")
        return
    end
    if not KSR.is_INVITE() then
        KSR.sl.send_reply(405, "Method Not Allowed")
        return
    end

    if KSR.evapi.client_count() == 0 and KSR.nats.connected() < 0 then
        KSR.sl.send_reply(503, "No Event Client")
        return
    end
    if KSR.tm.t_newtran() < 0 then
        KSR.sl.send_reply(500, "Cannot Create Transaction")
        return
    end
    local event = cjson.encode({
        event = "invite",
        tindex = KSR.pv.get("$T(id_index)"),
        tlabel = KSR.pv.get("$T(id_label)"),
        callid = KSR.pv.get("$ci"),
        from = KSR.pv.get("$fu"),
        to = KSR.pv.get("$tu"),
        ruri = KSR.pv.get("$ru"),
        src = KSR.pv.get("$si") .. ":" .. KSR.pv.get("$sp"),
    })
    if KSR.evapi.async_relay(event) < 0 then
        -- -1: nothing was suspended; -2: suspended, but the event did not go out.
        KSR.tm.t_reply(500, "Event Relay Failed")
    end
end

function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        KSR.info("event client " .. KSR.pv.get("$evapi(conidx)") .. " connected from "
            .. KSR.pv.get("$evapi(srcaddr)") .. ":" .. KSR.pv.get("$evapi(srcport)"))
        return
    end
    if evname == "evapi:connection-closed" then
        KSR.info("event client " .. KSR.pv.get("$evapi(conidx)") .. " disconnected")
        return
    end
    if evname:sub(1, 5) == "nats:" then
        -- A message of a [[nats.subscribe]] subject: nothing to do here.
        KSR.info("NATS message " .. evname .. ": " .. KSR.pv.get("$natsData"))
        return
    end
    if evname == "evapi:no-responders" then
        -- [nats]: no event client and no NATS worker took the event: its
        -- data is in $evapi(msg); answer the call now.
        local ok, ev = pcall(cjson.decode, KSR.pv.get("$evapi(msg)"))
        if ok and type(ev) == "table" and ev.tindex ~= nil and ev.tlabel ~= nil then
            KSR.pv.seti("$var(code)", 503)
            KSR.pv.sets("$var(reason)", "No Event Client")
            KSR.pv.sets("$var(dst)", "")
            KSR.tmx.t_continue(ev.tindex, ev.tlabel, "ksr_evapi_resume")
        end
        return
    end
    -- evapi:message-received (from a TCP client, or a NATS worker's answer)
    local text = KSR.pv.get("$evapi(msg)")
    local ok, answer = pcall(cjson.decode, text)
    if not ok or type(answer) ~= "table" or answer.tindex == nil or answer.tlabel == nil then
        KSR.warn("ignoring event-socket message without tindex/tlabel: " .. text)
        return
    end
    -- $var is per worker, and t_continue runs the resumed route right here
    -- in this worker: the route sees these values.
    KSR.pv.seti("$var(code)", tonumber(answer.code) or 0)
    KSR.pv.sets("$var(reason)", type(answer.reason) == "string" and answer.reason or "")
    KSR.pv.sets("$var(dst)", type(answer.dst) == "string" and answer.dst or "")
    if KSR.tmx.t_continue(answer.tindex, answer.tlabel, "ksr_evapi_resume") < 0 then
        KSR.warn("no suspended call " .. tostring(answer.tindex) .. ":" .. tostring(answer.tlabel)
            .. " (answered already, cancelled, or timed out)")
    end
end

function ksr_evapi_resume()
    local dst = KSR.pv.get("$var(dst)")
    if dst ~= "" then
        -- Stay on the path of the call, so its ACK and BYE come through us.
        KSR.rr.record_route()
        KSR.pv.sets("$du", dst)
        if KSR.tm.t_relay() < 0 then
            KSR.tm.t_reply(502, "Cannot Relay")
        end
        return
    end
    local code = KSR.pv.get("$var(code)")
    local reason = KSR.pv.get("$var(reason)")
    if code < 200 or code > 699 then
        code, reason = 500, "Bad Answer From Event Client"
    end
    if reason == "" then
        reason = "Decided By Event Client"
    end
    if KSR.tm.t_reply(code, reason) < 0 then
        -- Refused (and logged): a reason with CR, LF or NUL in it would
        -- write headers into the reply. The caller still gets an answer.
        KSR.tm.t_reply(500, "Bad Answer From Event Client")
    end
end
