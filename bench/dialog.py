"""The "dialog" row of bench/compare.py: both servers track a dialog for
every call, with record-route and loose routing, and relay statefully to a
SIPp callee.

Kamailio 5.6.3: its dialog module (`dlg_manage()`), rr (`record_route()`,
`loose_route()`, `append_fromtag` on as ours), tm and sl, in a cfg this
module writes into the run's folder at run time: native cfg by default
(Kamailio at its fastest), or the same KEMI Lua script as ours under
app_lua with --dialog-kam-script lua. Ours: the same routing as a KEMI Lua
script (`KSR.dialog.dlg_manage()`, `KSR.rr.record_route()`,
`KSR.rr.loose_route()`, `KSR.tm.t_relay()`), default `[dialog]` settings,
no event callback on either side. Both: `children` SIP workers, UDP on
127.0.0.1, warning-level log to stderr; Kamailio `-m` from --kam-shm.

The routing, the same on both:

    in-dialog (To tag): loose_route() -> t_relay(); an ACK that is not
      loose-routed is dropped; anything else 404
    CANCEL: dropped (this load has none)
    initial: Route removed; INVITE -> dlg_manage() + record_route();
      R-URI -> sip:$rU@127.0.0.1:<callee port>; t_relay()

Rate figure (mode "dialog"): the SIPp callee tests/sipp/uas_rr.xml and the
caller tests/sipp/uac_rr.xml (INVITE, ACK, BYE 200 ms later along the
route set), the pass rule of the basic row (the callee too saw every call
and retransmitted nothing).

Memory per live dialog (Runner.hold in compare.py): the caller
bench/dialog/uac_hold.xml holds every call for SIPp's -d between ACK and
BYE, so N calls are up at once; PSS of all server processes is read idle
and with the N dialogs up (after every INVITE transaction has left the
table: the INVITEs take N/rate s, a transaction stays 5 s after it ends),
and the live count is checked with `dlg.stats_active` (ours over HTTP,
Kamailio's through kamcmd and the ctl module). The same run with mode
"dialog_off" (the same script without dlg_manage) gives the memory the
transactions leave behind (allocator high-water, shm pages touched),
which the "net" figure subtracts.
"""
import os
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UAS_XML = os.path.join(REPO, "tests", "sipp", "uas_rr.xml")
UAC_XML = os.path.join(REPO, "tests", "sipp", "uac_rr.xml")
HOLD_XML = os.path.join(HERE, "dialog", "uac_hold.xml")
DEBIAN_MPATH = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

KAM_CFG = """#!KAMAILIO
# written by bench/dialog.py for one benchmark run (the dialog row)
debug=0
log_stderror=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{sip_port}
mpath="{mpath}"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "dialog.so"
loadmodule "ctl.so"
{lua_load}
modparam("rr", "append_fromtag", 1)
modparam("ctl", "binrpc", "unix:{ctl}")
{lua_params}
{routes}
"""

KAM_ROUTES = """request_route {{
	if (has_totag()) {{
		if (loose_route()) {{
			if (!t_relay()) sl_reply_error();
			exit;
		}}
		if (is_method("ACK")) exit;
		sl_send_reply("404", "Not here");
		exit;
	}}
	if (is_method("CANCEL")) exit;
	remove_hf("Route");
	if (is_method("INVITE")) {{
{dlg}		record_route();
	}}
	$ru = "sip:" + $rU + "@127.0.0.1:{uas_port}";
	if (!t_relay()) sl_reply_error();
}}
"""

LUA = """-- written by bench/dialog.py for one benchmark run (the dialog row)
function ksr_request_route()
  if KSR.siputils.has_totag() > 0 then
    if KSR.rr.loose_route() > 0 then
      if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
      return
    end
    if KSR.is_ACK() then return end
    KSR.sl.sl_send_reply(404, "Not here")
    return
  end
  if KSR.is_CANCEL() then return end
  KSR.hdr.remove("Route")
  if KSR.is_INVITE() then
{dlg}    KSR.rr.record_route()
  end
  KSR.pv.sets("$ru", "sip:" .. KSR.pv.get("$rU") .. "@127.0.0.1:{uas_port}")
  if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
end
"""

EVAPI_CONF = """# written by bench/dialog.py for one benchmark run (the dialog row)
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
children = {children}

[script]
file = "{script}"

[evapi]
workers = 1
bind_addr = "127.0.0.1:{evapi_port}"

[log]
level = "warn"
"""


def lua_script(uas_port, dialogs=True):
    dlg = "    KSR.dialog.dlg_manage()\n" if dialogs else ""
    return LUA.format(dlg=dlg, uas_port=uas_port)


def kamailio_cfg(rdir, sip_port, children, uas_port, dialogs=True, script="cfg", maxbuffer=0):
    """(cfg path, ctl socket path); the cfg (and for script "lua" the Lua
    file beside it) written into rdir."""
    # Kamailio's ctl module refuses a socket path over 104 bytes ("name
    # too long"), and a run directory under a long --out makes one: the
    # socket goes into a short directory of its own.
    ctl = os.path.join(tempfile.mkdtemp(prefix="kctl-"), "ctl")
    if script == "lua":
        lua = os.path.join(rdir, "dialog.lua")
        open(lua, "w").write(lua_script(uas_port, dialogs))
        lua_load = 'loadmodule "app_lua.so"'
        lua_params = f'modparam("app_lua", "load", "{lua}")\ncfgengine "lua"'
        routes = ""
    else:
        lua_load = lua_params = ""
        routes = KAM_ROUTES.format(dlg="\t\tdlg_manage();\n" if dialogs else "", uas_port=uas_port)
    cfg = os.path.join(rdir, "kamailio-dialog.cfg")
    text = KAM_CFG.format(children=children, sip_port=sip_port, mpath=DEBIAN_MPATH,
                          ctl=ctl, lua_load=lua_load, lua_params=lua_params, routes=routes)
    if maxbuffer:
        # the UDP receive buffer Kamailio may grow to (bench/compare.py --udp-buffer)
        text = text.replace(f"children={children}\n", f"children={children}\nmaxbuffer={maxbuffer}\n", 1)
    open(cfg, "w").write(text)
    return cfg, ctl


def evapi_conf(rdir, sip_port, evapi_port, children, uas_port, dialogs=True):
    script = os.path.join(rdir, "dialog.lua")
    open(script, "w").write(lua_script(uas_port, dialogs))
    return EVAPI_CONF.format(sip_port=sip_port, children=children, script=script,
                             evapi_port=evapi_port)


def hold_uac_cmd(rate, ncalls, hold_ms, timeout_s, sip_port, sipp_port):
    """The caller that keeps every call up hold_ms between ACK and BYE."""
    return ["sipp", "-sf", HOLD_XML, "-s", "bob", "-r", str(rate), "-rp", "1000", "-m", str(ncalls),
            "-d", str(hold_ms), "-l", str(ncalls + 1000), "-i", "127.0.0.1", "-p", str(sipp_port),
            f"127.0.0.1:{sip_port}", "-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
            "-cp", str(sipp_port + 100), "-mp", str(sipp_port + 200), "-buff_size", "4194304",
            "-timeout", f"{timeout_s}s", "-timeout_error"]
