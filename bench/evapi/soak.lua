-- Soak script (bench/soak.sh): the async round trip of bench/evapi/async.lua,
-- with a copy of every event relayed to the monitoring clients.
-- The first event client (connection index 0) is the responder; every other
-- client is a monitor. Each INVITE is suspended and announced to the
-- responder (async_unicast) and to all monitors (relay_multicast); the
-- responder's answer resumes it into a 404.
local cjson = require("cjson")
local get = KSR.pv.get

function ksr_request_route()
    if KSR.is_ACK() then
        KSR.tm.t_check_trans()
        return
    end
    if KSR.tm.t_check_trans() > 0 then
        return
    end
    if not KSR.is_INVITE() then
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        return
    end
    KSR.tm.t_newtran()
    local event = '{"event":"invite","tindex":"' .. get("$T(id_index)")
        .. '","tlabel":"' .. get("$T(id_label)") .. '","ci":"' .. get("$ci") .. '"}'
    KSR.evapi.relay_multicast(event, "monitor")
    if KSR.evapi.async_unicast(event, "responder") < 0 then
        KSR.tm.t_reply(500, "No Responder")
    end
end

function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        KSR.evapi.set_tag(get("$evapi(conidx)") == 0 and "responder" or "monitor")
        return
    end
    if evname ~= "evapi:message-received" then
        return
    end
    local ok, m = pcall(cjson.decode, get("$evapi(msg)"))
    if ok and type(m) == "table" and m.action == "reply" then
        if KSR.tmx.t_continue(tonumber(m.tindex), tonumber(m.tlabel), "ksr_soak_resume") < 0 then
            KSR.err("t_continue failed for " .. tostring(m.tindex) .. ":" .. tostring(m.tlabel))
        end
    end
end

function ksr_soak_resume()
    KSR.tm.t_reply(404, "Not Here")
end
