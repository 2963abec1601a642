-- A routing script written the way Kamailio KEMI Lua scripts are written
-- (the style of Kamailio's own kamailio-basic-kemi-lua.lua, and of public
-- evapi configurations): route functions called by name, KSR.x.exit() to
-- stop, $var for per-worker state, jansson for JSON, Lua 5.1 idioms,
-- record-routing and loose routing for in-dialog requests. It runs under
-- Kamailio 5.x with app_lua as it runs here.
--
-- Calls to users listed in $sht(blocked=>...) are refused; the others are
-- suspended and offered to the event clients tagged "callctl", which answer
-- {"tindex":..,"tlabel":..,"action":"reject"|"relay","code":..,"dst":..}.

FLT_ACC = 1

-- SIP request routing
function ksr_request_route()
    ksr_route_reqinit()
    ksr_route_withindlg()
    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            KSR.tm.t_relay()
        end
        KSR.x.exit()
    end
    if KSR.is_method_in("RMSNP") then
        KSR.sl.sl_send_reply(501, "Not Implemented Here")
        KSR.x.exit()
    end
    if KSR.is_OPTIONS() then
        KSR.sl.sl_send_reply(200, "Keepalive")
        KSR.x.exit()
    end
    if not KSR.is_INVITE() then
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        KSR.x.exit()
    end
    ksr_route_blocked()
    ksr_route_callctl()
end

-- Requests within a dialog follow the route recorded at its INVITE
function ksr_route_withindlg()
    if KSR.siputils.has_totag() < 0 then
        return 1
    end
    if KSR.rr.loose_route() > 0 then
        if KSR.tm.t_relay() < 0 then
            KSR.sl.sl_reply_error()
        end
        KSR.x.exit()
    end
    if not KSR.is_ACK() then
        KSR.sl.sl_send_reply(404, "Not here")
    end
    KSR.x.exit()
end

-- Per request initial checks
function ksr_route_reqinit()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        KSR.x.exit()
    end
    if not KSR.hdr.is_present("User-Agent") then
        KSR.log("warn", "request without User-Agent from " .. KSR.pv.get("$si") .. ":" .. KSR.pv.get("$sp") .. "\n")
    end
    KSR.hdr.remove("X-CallCtl")
end

function ksr_route_blocked()
    local ruser = KSR.pv.gete("$rU")
    if KSR.htable.sht_get("blocked", ruser) ~= nil then
        KSR.sl.sl_send_reply(403, "Blocked")
        KSR.x.exit()
    end
end

function ksr_route_callctl()
    if KSR.evapi.client_count("callctl") == 0 then
        KSR.sl.sl_send_reply(503, "Call Control Unavailable")
        KSR.x.exit()
    end
    KSR.tm.t_newtran()
    local fields = {
        string.format('"tindex":%d', KSR.pv.get("$T(id_index)")),
        string.format('"tlabel":%d', KSR.pv.get("$T(id_label)")),
        '"caller":"' .. KSR.pv.gete("$fU") .. '"',
        '"callee":"' .. KSR.pv.gete("$rU") .. '"',
        '"callid":"' .. KSR.pv.gete("$ci") .. '"',
    }
    local body = "{" .. table.concat(fields, ",") .. "}"
    KSR.dbg("event: " .. body .. " (" .. table.getn(fields) .. " fields)\n")
    if KSR.evapi.async_multicast(body, "callctl") < 0 then
        KSR.tm.t_reply(500, "Call Control Failed")
    end
    KSR.x.exit()
end

-- evapi events
function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        if KSR.pv.get("$evapi(srcaddr)") ~= "127.0.0.1" then
            KSR.evapi.close()
            KSR.x.exit()
        end
        KSR.evapi.set_tag("callctl")
        KSR.info("call control client " .. KSR.pv.get("$evapi(conidx)") .. " connected\n")
    elseif evname == "evapi:message-received" then
        local msg = KSR.pv.gete("$evapi(msg)")
        if KSR.jansson.get("tindex", msg, "$var(tindex)") < 0 then
            KSR.err("bad message: " .. msg .. "\n")
            KSR.x.exit()
        end
        KSR.jansson.get("tlabel", msg, "$var(tlabel)")
        KSR.pv.sets("$var(action)", "reject")
        KSR.jansson.get("action", msg, "$var(action)")
        KSR.pv.seti("$var(code)", 404)
        KSR.jansson.get("code", msg, "$var(code)")
        KSR.pv.sets("$var(dst)", "")
        KSR.jansson.get("dst", msg, "$var(dst)")
        local args = { KSR.pv.get("$var(tindex)"), KSR.pv.get("$var(tlabel)") }
        KSR.tmx.t_continue(args[1], args[2], "ksr_route_callctl_answer")
    elseif evname == "evapi:connection-closed" then
        KSR.info("call control client " .. KSR.pv.get("$evapi(conidx)") .. " gone\n")
    end
end

function ksr_route_callctl_answer()
    if KSR.pv.get("$var(action)") == "relay" then
        KSR.pv.sets("$du", KSR.pv.get("$var(dst)"))
        KSR.hdr.append("X-CallCtl: relayed\r\n")
        KSR.rr.record_route()
        KSR.tm.t_on_failure("ksr_failure_callctl")
        if KSR.tm.t_relay() < 0 then
            KSR.sl.sl_send_reply(500, "Relay Failed")
        end
        KSR.x.exit()
    end
    local code, reason = unpack({ KSR.pv.get("$var(code)"), "Rejected By Call Control" })
    KSR.tm.t_reply(code, reason)
end

function ksr_failure_callctl()
    KSR.log("info", "relayed call failed with " .. KSR.pv.get("$T(reply_code)") .. "\n")
    KSR.tm.t_reply(480, "Temporarily Unavailable")
end
