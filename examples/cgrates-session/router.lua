-- CGRateS session charging, ported to KEMI Lua from the logic of CGRateS's
-- Kamailio tutorial (data/tutorials/kamevapi/kamailio/etc/kamailio/
-- kamailio.cfg and kamailio-cgrates.cfg in the cgrates repository).
--
-- The flow, with the names CGRateS's KamailioAgent expects:
--
-- 1. An INVITE is suspended and CGR_AUTH_REQUEST goes to the engine with
--    the transaction's tr_index/tr_label and reply_route
--    "CGR_SESSIONAUTH_REPLY". No engine connected: 503 "Charging
--    controller unreachable" at once.
-- 2. The engine answers with Event "CGR_SESSIONAUTH_REPLY",
--    TransactionIndex/TransactionLabel, MaxUsage (seconds), Attributes,
--    ResourceAllocation, Routes, Error. The transaction is continued
--    (t_continue) in cgrates_sessionauth_reply: an Error refuses the call
--    (503 "CGR_ERROR"), MaxUsage 0 refuses it (403 "Insufficient credit"),
--    else the dialog is tracked with the MaxUsage as its lifetime and the
--    call relayed.
-- 3. dialog:start sends CGR_CALL_START with the dialog's h_entry/h_id;
--    dialog:end sends CGR_CALL_END with Usage = now - answer time.
-- 4. CGR_SESSION_DISCONNECT (HashEntry, HashId) from the engine ends the
--    dialog through the RPC dlg.end_dlg (BYE to both sides).
--
-- REGISTER, SUBSCRIBE and PUBLISH get the tutorial's "simpleauth" request;
-- CGR_DLG_LIST from the engine is answered with the dialog list.

local cjson = require("cjson")

-- Where calls go whose callee is not registered here (host:port of a
-- gateway). The tutorial answers those 404; set this to "" for that.
local GATEWAY = "127.0.0.1:5080"
-- The tenant the tutorial puts in every event.
local TENANT = "cgrates.org"

---------------------------------------------------------------------------
-- The engine's connection: the tutorial keeps the last connected engine's
-- address in $sht(cgrconn=>cgr) and clears it when that one leaves.

local function engine_connected()
    return KSR.pv.get("$sht(cgrconn=>cgr)") ~= nil
end

local function refuse_unreachable()
    if not engine_connected() then
        KSR.sl.sl_send_reply(503, "Charging controller unreachable")
        KSR.x.exit()
    end
end

---------------------------------------------------------------------------
-- SIP routing (kamailio.cfg's request_route and its helper routes)

-- route[RELAY]
local function relay()
    if KSR.is_INVITE() and KSR.tm.t_is_set("failure_route") < 0 then
        KSR.tm.t_on_failure("cgrates_manage_failure")
    end
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
    KSR.x.exit()
end

-- route[REQINIT]
local function reqinit()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        KSR.x.exit()
    end
    if KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.pv.get("$rU") == nil then
        KSR.sl.sl_send_reply(200, "Keepalive")
        KSR.x.exit()
    end
    if KSR.sanity.sanity_check(1511, 7) < 0 then
        KSR.err("Malformed SIP message from " .. KSR.pv.get("$si") .. ":" .. KSR.pv.get("$sp"))
        KSR.x.exit()
    end
end

-- route[WITHINDLG]: requests inside a call follow the recorded route; a
-- BYE passing here ends its dialog (dialog:end).
local function withindlg()
    if KSR.siputils.has_totag() < 0 then
        return
    end
    if KSR.rr.loose_route() > 0 then
        if KSR.is_NOTIFY() then
            KSR.rr.record_route()
        end
        relay()
    end
    if KSR.is_ACK() then
        if KSR.tm.t_check_trans() > 0 then
            relay()
        end
        KSR.x.exit()
    end
    KSR.sl.sl_send_reply(404, "Not here")
    KSR.x.exit()
end

-- route[LOCATION]: a registered callee, else the gateway.
local function location()
    if KSR.registrar.lookup("location") > 0 then
        return
    end
    if GATEWAY == "" then
        KSR.tm.t_reply(404, "Not Found")
        KSR.x.exit()
    end
    KSR.pv.sets("$ru", "sip:" .. KSR.pv.get("$rU") .. "@" .. GATEWAY)
end

-- failure_route[MANAGE_FAILURE]
function cgrates_manage_failure()
    if KSR.tm.t_is_canceled() > 0 then
        return
    end
    if KSR.tm.t_check_status("3[0-9][0-9]") > 0 then
        KSR.tm.t_reply(404, "Not found")
    end
end

---------------------------------------------------------------------------
-- Requests to the engine

-- A CGRateS event: JSON with the transaction's ids as strings.
local function auth_request(fields)
    KSR.tm.t_newtran()
    fields.event = "CGR_AUTH_REQUEST"
    fields.tr_index = tostring(KSR.pv.get("$T(id_index)"))
    fields.tr_label = tostring(KSR.pv.get("$T(id_label)"))
    local rc = KSR.evapi.async_relay(cjson.encode(fields))
    if rc == -2 then
        -- Suspended, but the engine's queue refused it.
        KSR.tm.t_reply(503, "Charging controller unreachable")
    elseif rc < 0 then
        KSR.sl.sl_send_reply(500, "Server Internal Error")
    end
    KSR.x.exit()
end

-- route[CGRATES_SESSIONAUTH_REQUEST]
local function sessionauth_request()
    refuse_unreachable()
    auth_request({
        cgr_flags = "*attributes;*accounts;*routes;*resources;*thresholds",
        reply_route = "CGR_SESSIONAUTH_REPLY",
        Account = KSR.pv.get("$fU") or "",
        Destination = KSR.pv.get("$rU") or "",
        SetupTime = tostring(KSR.pv.get("$TS")),
    })
end

-- route[CGRATES_SIMPLEAUTH_REQUEST]
local function simpleauth_request()
    refuse_unreachable()
    auth_request({
        cgr_flags = "*attributes",
        cgr_context = "simpleauth",
        reply_route = "CGR_SIMPLEAUTH_REPLY",
        Account = KSR.pv.get("$fU") or "",
    })
end

function ksr_request_route()
    reqinit()
    -- (The tutorial's NAT detection is not ported: see README.md.)
    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            relay()
        end
        return
    end
    withindlg()
    -- Only initial requests from here. Retransmissions never reach the
    -- script (the transaction layer takes them), so the tutorial's
    -- t_precheck_trans() block has nothing to do.
    KSR.hdr.remove("Route")
    if KSR.is_method_in("IS") then
        KSR.rr.record_route()
    end
    if not KSR.is_myself_ruri() then
        KSR.sl.sl_send_reply(604, "Only local destinations accepted")
        return
    end
    if KSR.is_method_in("RSP") then
        simpleauth_request()
        return
    end
    if KSR.pv.get("$rU") == nil then
        KSR.sl.sl_send_reply(484, "Address Incomplete")
        return
    end
    if not KSR.is_INVITE() then
        KSR.sl.sl_send_reply(503, "Unsupported method")
        return
    end
    sessionauth_request()
end

---------------------------------------------------------------------------
-- Back from the engine: the continued transactions

-- route[PARSE_CGRATES_ATTRIBUTES]: "Name:value,Name2:value2" into
-- $avp(Name)... (CGRateS's attribute digest).
local function parse_attributes(digest)
    for item in string.gmatch(digest or "", "[^,]+") do
        local name, value = string.match(item, "^([^:]+):(.*)$")
        if name then
            KSR.pv.sets("$avp(" .. name .. ")", value)
        end
    end
end

-- Sets $dlg_var(name) when there is a value (a null stays unset).
local function dlg_var(name, value)
    if value ~= nil then
        KSR.pv.sets("$dlg_var(" .. name .. ")", tostring(value))
    end
end

-- route[CGRATES_SESSIONAUTH_REPLY]: the INVITE, continued.
function cgrates_sessionauth_reply()
    local err = KSR.pv.get("$var(cgrError)") or ""
    if err ~= "" then
        KSR.err("CGR_AUTH_ERROR: " .. err)
        KSR.tm.t_reply(503, "CGR_ERROR")
        KSR.x.exit()
    end
    parse_attributes(KSR.pv.get("$var(cgrAttributes)"))
    -- (route(AUTH), digest authentication with the password from the
    -- attributes, is not ported: see README.md.)

    -- Track the dialog: its timeout and the values the CDR needs.
    if KSR.dialog.dlg_manage() < 0 then
        KSR.err("dlg_manage failed for " .. KSR.pv.get("$ci"))
    end
    dlg_var("SetupTime", KSR.pv.get("$TS"))
    dlg_var("cgrOriginID", KSR.pv.get("$dlg(callid)"))
    dlg_var("cgrTenant", TENANT)
    dlg_var("cgrReqType", KSR.pv.get("$avp(RequestType)"))
    dlg_var("cgrAccount", KSR.pv.get("$fU"))
    dlg_var("cgrDestination", KSR.pv.get("$rU"))
    dlg_var("paypalAccount", KSR.pv.get("$avp(PaypalAccount)"))

    local max_usage = KSR.pv.get("$var(cgrMaxUsage)") or 0
    if max_usage == 0 then
        -- Not enough balance: the call does not go through.
        KSR.tm.t_reply(403, "Insufficient credit")
        KSR.x.exit()
    elseif max_usage > 0 and KSR.dialog.dlg_set_timeout(max_usage) < 0 then
        KSR.tm.t_reply(503, "CGR_MAX_USAGE_ERROR")
        KSR.x.exit()
    end
    -- (A negative MaxUsage, CGRateS's "unlimited", keeps [dialog]
    -- default_timeout.)

    local routes = KSR.pv.get("$var(cgrRoutes)") or ""
    if routes ~= "" then
        -- The first route, kept with the dialog (for show, as the tutorial).
        dlg_var("cgrRoutes", string.match(routes, "^[^,]*"))
    end
    location()
    relay()
end

-- route[CGRATES_SIMPLEAUTH_REPLY]: REGISTER, SUBSCRIBE, PUBLISH, continued.
function cgrates_simpleauth_reply()
    local err = KSR.pv.get("$var(cgrError)") or ""
    if err ~= "" then
        KSR.err("CGR_PROFILE_ERROR: " .. err)
        KSR.tm.t_reply(503, "CGR_ERROR")
        KSR.x.exit()
    end
    parse_attributes(KSR.pv.get("$var(cgrAttributes)"))
    if KSR.is_REGISTER() then
        -- route(REGISTRAR): save answers the REGISTER itself.
        KSR.registrar.save("location", 0)
        KSR.x.exit()
    end
    location()
    relay()
end

---------------------------------------------------------------------------
-- Messages from the engine (event_route[evapi:message-received] dispatches
-- on "Event" to a route of that name; here a fixed table, so the network
-- never names a script function)

-- The transaction's ids and the reply's fields into $var, as the
-- tutorial's CGR_*_REPLY routes do, then continue it in `route`.
local function continue_auth(m, route)
    local index = math.tointeger(tonumber(m.TransactionIndex))
    local label = math.tointeger(tonumber(m.TransactionLabel))
    if index == nil or label == nil then
        KSR.warn("CGRateS reply without a transaction: " .. KSR.pv.get("$evapi(msg)"))
        return
    end
    local function str(v)
        return type(v) == "string" and v or ""
    end
    KSR.pv.sets("$var(cgrAttributes)", str(m.Attributes))
    KSR.pv.sets("$var(cgrResourceAllocation)", str(m.ResourceAllocation))
    KSR.pv.sets("$var(cgrRoutes)", str(m.Routes))
    KSR.pv.sets("$var(cgrError)", str(m.Error))
    -- {s.int} of a missing or odd MaxUsage is 0: no call.
    KSR.pv.seti("$var(cgrMaxUsage)", math.tointeger(tonumber(m.MaxUsage)) or 0)
    if str(m.ResourceAllocation) ~= "" then
        KSR.dbg("CGRateS resource allocation: " .. m.ResourceAllocation)
    end
    if KSR.tmx.t_continue(index, label, route) < 0 then
        KSR.warn("CGRateS reply for transaction " .. index .. ":" .. label
            .. " that is no longer waiting")
    end
end

local from_engine = {}

-- route[CGR_SESSIONAUTH_REPLY]. CGRateS names its reply after the
-- request's reply_route, and "CGR_AUTH_REPLY" when there is none.
from_engine.CGR_SESSIONAUTH_REPLY = function(m)
    continue_auth(m, "cgrates_sessionauth_reply")
end
from_engine.CGR_AUTH_REPLY = from_engine.CGR_SESSIONAUTH_REPLY

-- route[CGR_SIMPLEAUTH_REPLY]
from_engine.CGR_SIMPLEAUTH_REPLY = function(m)
    continue_auth(m, "cgrates_simpleauth_reply")
end

-- route[CGR_SESSION_DISCONNECT]: end the dialog as Kamailio's cfg does,
-- with the RPC dlg.end_dlg (BYE to both sides; dialog:end follows).
from_engine.CGR_SESSION_DISCONNECT = function(m)
    local h_entry = math.tointeger(tonumber(m.HashEntry))
    local h_id = math.tointeger(tonumber(m.HashId))
    if h_entry == nil or h_id == nil then
        KSR.warn("CGR_SESSION_DISCONNECT without HashEntry/HashId: " .. KSR.pv.get("$evapi(msg)"))
        return
    end
    KSR.info("CGR_SESSION_DISCONNECT " .. h_entry .. ":" .. h_id .. " reason: "
        .. tostring(m.Reason or ""))
    KSR.jsonrpcs.exec(cjson.encode({
        jsonrpc = "2.0",
        id = 1,
        method = "dlg.end_dlg",
        params = { h_entry, h_id },
    }))
    if KSR.pv.get("$jsonrpl(code)") ~= 200 then
        KSR.warn("CGR_SESSION_DISCONNECT " .. h_entry .. ":" .. h_id .. ": "
            .. KSR.pv.get("$jsonrpl(text)"))
    end
end

-- route[CGR_DLG_LIST]: the dialogs, with their variables (cgrOriginID),
-- for the engine to sync its sessions.
from_engine.CGR_DLG_LIST = function(_)
    KSR.jsonrpcs.exec('{"jsonrpc":"2.0","id":1,"method":"dlg.list_ctx","params":[]}')
    KSR.evapi.relay('{"event":"CGR_DLG_LIST_REPLY","jsonrpl_body":'
        .. KSR.pv.get("$jsonrpl(body)") .. '}')
end

function ksr_evapi_event(evname)
    if evname == "evapi:connection-new" then
        KSR.pv.sets("$sht(cgrconn=>cgr)",
            KSR.pv.get("$evapi(srcaddr)") .. ":" .. KSR.pv.get("$evapi(srcport)"))
    elseif evname == "evapi:connection-closed" then
        local closed = KSR.pv.get("$evapi(srcaddr)") .. ":" .. KSR.pv.get("$evapi(srcport)")
        if KSR.pv.get("$sht(cgrconn=>cgr)") == closed then
            KSR.pv.unset("$sht(cgrconn=>cgr)")
        end
    elseif evname == "evapi:message-received" then
        local ok, m = pcall(cjson.decode, KSR.pv.get("$evapi(msg)"))
        if not ok or type(m) ~= "table" then
            KSR.warn("CGRateS message that is not a JSON object: " .. KSR.pv.get("$evapi(msg)"))
            return
        end
        local handler = from_engine[m.Event]
        if handler == nil then
            KSR.warn("CGRateS message with unknown Event " .. tostring(m.Event))
            return
        end
        handler(m)
    end
end

---------------------------------------------------------------------------
-- Dialog events (event_route[dialog:start] / [dialog:end])

-- route[CGR_CALL_START]: the call was answered.
local function call_start()
    if not engine_connected() then
        KSR.info("Charging controller unreachable")
        return
    end
    KSR.evapi.relay(cjson.encode({
        event = "CGR_CALL_START",
        h_entry = tostring(KSR.pv.get("$dlg(h_entry)")),
        h_id = tostring(KSR.pv.get("$dlg(h_id)")),
        cgr_flags = "*attributes;*accounts;*resources;*thresholds",
        OriginID = KSR.pv.get("$dlg_var(cgrOriginID)"),
        RequestType = KSR.pv.get("$dlg_var(cgrReqType)"),
        Tenant = KSR.pv.get("$dlg_var(cgrTenant)"),
        Account = KSR.pv.get("$dlg_var(cgrAccount)"),
        Destination = KSR.pv.get("$dlg_var(cgrDestination)"),
        SetupTime = KSR.pv.get("$dlg_var(SetupTime)"),
        AnswerTime = tostring(KSR.pv.get("$TS")),
    }))
end

-- route[CGR_CALL_END]: the call is over (BYE, MaxUsage reached, or a
-- disconnect); Usage in seconds from the answer.
local function call_end()
    if not engine_connected() then
        KSR.info("Charging controller unreachable")
        return
    end
    local start_ts = KSR.pv.get("$dlg(start_ts)") or 0
    KSR.evapi.relay(cjson.encode({
        event = "CGR_CALL_END",
        cgr_flags = "*accounts;*resources",
        OriginID = KSR.pv.get("$dlg_var(cgrOriginID)"),
        RequestType = KSR.pv.get("$dlg_var(cgrReqType)"),
        Tenant = KSR.pv.get("$dlg_var(cgrTenant)"),
        Account = KSR.pv.get("$dlg_var(cgrAccount)"),
        Destination = KSR.pv.get("$dlg_var(cgrDestination)"),
        AnswerTime = tostring(start_ts),
        PaypalAccount = KSR.pv.get("$dlg_var(paypalAccount)"),
        SetupTime = KSR.pv.get("$dlg_var(SetupTime)"),
        Usage = tostring(KSR.pv.get("$TS") - start_ts),
    }))
end

function ksr_dialog_event(evname)
    if evname == "dialog:start" then
        call_start()
    elseif evname == "dialog:end" then
        call_end()
    end
end
