-- Benchmark script, mode "async": Kamailio's MODE_ASYNC in
-- bench/kamailio/kamailio.cfg. An INVITE is suspended and announced as
-- {"event":"invite","tindex":"..","tlabel":"..","ci":".."} (ids quoted, as
-- the cfg's template makes them); the responder answers
-- {"tindex":..,"tlabel":..,"action":"reply"}, and t_continue resumes the
-- transaction into ksr_bench_resume, which replies 404 Not Here.
local cjson = require("cjson")
local get = KSR.pv.get

function ksr_request_route()
    if KSR.is_ACK() then
        -- the ACK of our negative reply is absorbed by the transaction layer
        KSR.tm.t_check_trans()
        return
    end
    if KSR.tm.t_check_trans() > 0 then
        return
    end
    if KSR.is_INVITE() then
        KSR.tm.t_newtran()
        KSR.evapi.async_relay('{"event":"invite","tindex":"' .. get("$T(id_index)")
            .. '","tlabel":"' .. get("$T(id_label)")
            .. '","ci":"' .. get("$ci") .. '"}')
        return
    end
    KSR.sl.sl_send_reply(405, "Method Not Allowed")
end

function ksr_evapi_event(evname)
    if evname ~= "evapi:message-received" then
        return
    end
    local ok, m = pcall(cjson.decode, get("$evapi(msg)"))
    if ok and type(m) == "table" and m.action == "reply" then
        local ti, tl = tonumber(m.tindex), tonumber(m.tlabel)
        if ti == nil or tl == nil or KSR.tmx.t_continue(ti, tl, "ksr_bench_resume") < 0 then
            KSR.err("t_continue failed for " .. tostring(m.tindex) .. ":" .. tostring(m.tlabel))
        end
    end
end

function ksr_bench_resume()
    KSR.tm.t_reply(404, "Not Here")
end
